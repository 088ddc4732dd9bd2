//! Images kept for `response_format: "url"`: served at `GET /v1/images/files/{id}.png` for a
//! bounded time (`--file-ttl`) and count (`--max-files`, oldest evicted first), so memory stays
//! bounded. Ids are 128 random bits: the URL itself is the capability (like OpenAI's expiring
//! URLs), so the route needs no API key.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

struct Stored {
    at: Instant,
    png: Arc<Vec<u8>>,
}

#[derive(Default)]
struct Inner {
    files: HashMap<String, Stored>,
    order: VecDeque<String>,
}

/// See the module docs.
pub struct FileStore {
    inner: Mutex<Inner>,
    ttl: Duration,
    max: usize,
}

impl FileStore {
    pub fn new(ttl: Duration, max: usize) -> FileStore {
        FileStore {
            inner: Mutex::new(Inner::default()),
            ttl,
            max,
        }
    }

    fn evict(&self, inner: &mut Inner, now: Instant) {
        while let Some(oldest) = inner.order.front() {
            let expired = inner
                .files
                .get(oldest)
                .is_none_or(|s| now.duration_since(s.at) >= self.ttl);
            if expired || inner.files.len() > self.max {
                if let Some(id) = inner.order.pop_front() {
                    inner.files.remove(&id);
                }
            } else {
                break;
            }
        }
    }

    /// Keeps `png`; returns its id (`None` when `--max-files` is 0).
    pub fn put(&self, png: Vec<u8>) -> Option<String> {
        if self.max == 0 {
            return None;
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.files.insert(
            id.clone(),
            Stored {
                at: now,
                png: Arc::new(png),
            },
        );
        inner.order.push_back(id.clone());
        self.evict(&mut inner, now);
        Some(id)
    }

    /// The PNG stored under `id`, unless it expired or was evicted.
    pub fn get(&self, id: &str) -> Option<Arc<Vec<u8>>> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        self.evict(&mut inner, now);
        let s = inner.files.get(id)?;
        (now.duration_since(s.at) < self.ttl).then(|| s.png.clone())
    }

    /// Files held now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_time() {
        let store = FileStore::new(Duration::from_secs(60), 2);
        let a = store.put(vec![1]).unwrap();
        let b = store.put(vec![2]).unwrap();
        let c = store.put(vec![3]).unwrap();
        assert_eq!(store.len(), 2);
        assert!(store.get(&a).is_none(), "the oldest is evicted");
        assert_eq!(store.get(&b).unwrap().as_slice(), [2]);
        assert_eq!(store.get(&c).unwrap().as_slice(), [3]);
        assert_ne!(b, c);

        let short = FileStore::new(Duration::from_millis(1), 8);
        let d = short.put(vec![4]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.get(&d).is_none(), "expired");
        assert!(short.is_empty());
        assert!(
            FileStore::new(Duration::from_secs(1), 0)
                .put(vec![5])
                .is_none()
        );
    }
}
