//! Executes a decoder's [`DecoderMemoryPlan`]: the memory infos its outputs are bound to, the
//! allocator its state buffers come from, and the host round trip that row moves take when the
//! state lives on a device.
//!
//! On the host (the CPU plan) nothing here copies: state buffers come from the session's
//! allocator and row moves read and write them in place, exactly as before device plans
//! existed. On a CUDA device, buffers come from an allocator created on the session for CUDA
//! memory (a session's own `allocator()` is always the CPU one), are zeroed once when allocated
//! (a fresh row's shift window must read zeros), and a row move copies the states involved to
//! the host, moves the rows there, and copies the result back: rows join or leave a state far
//! less often than it steps.

use crate::ep::{DecoderMemoryPlan, MemoryPlace, register};
use crate::error::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use ort::memory::{AllocationDevice, Allocator, MemoryInfo};
use ort::session::Session;
use ort::value::{DynTensorValueType, DynValue, Tensor};
use std::ops::Deref;

/// The decoder's memory, ready to use.
pub(super) struct StateMemory {
    place: MemoryPlace,
    /// Where `present_*` outputs are bound (the state's place).
    pub(super) state: MemoryInfo<'static>,
    /// Where the logits output is bound (the host).
    pub(super) logits: MemoryInfo<'static>,
    /// The device allocator for state buffers; `None` on the host (the session's is used).
    device: Option<Allocator>,
    /// Row moves copy through the host ([`DecoderMemoryPlan::row_moves_through_host`]).
    through_host: bool,
}

fn moving(what: &str) -> impl Fn(ort::Error) -> Error + '_ {
    move |e| Error::ort(format!("graph `decoder`: {what}"), e)
}

impl StateMemory {
    /// The plan's memory for decoder `session` (the device allocator is created on it).
    pub(super) fn new(plan: &DecoderMemoryPlan, session: &Session) -> Result<StateMemory> {
        let state = register::memory_info(plan.state)?;
        let logits = register::memory_info(plan.logits)?;
        let device = match plan.state {
            MemoryPlace::Host => None,
            MemoryPlace::Cuda { .. } => {
                let info = register::memory_info(plan.state)?;
                Some(Allocator::new(session, info).map_err(|e| {
                    Error::ort(
                        format!(
                            "graph `decoder`: cannot create a {} allocator on its session",
                            plan.state
                        ),
                        e,
                    )
                })?)
            }
        };
        Ok(StateMemory {
            place: plan.state,
            state,
            logits,
            device,
            through_host: plan.row_moves_through_host,
        })
    }

    /// True when rows are moved in place (host state), false when through host copies.
    pub(super) fn moves_in_place(&self) -> bool {
        !self.through_host
    }

    /// A state buffer of element type `T` and `shape` in the state's memory, made by an allocator (only
    /// such values can be bound as outputs, which in-place states are). On the host it comes
    /// from `session`'s allocator (ONNX Runtime zeroes CPU allocations itself); on a device it
    /// is zeroed when `zeroed` (not when it is about to be overwritten whole).
    pub(super) fn allocate<T: StateElement>(
        &self,
        session: &Session,
        shape: &[usize],
        name: &str,
        zeroed: bool,
    ) -> Result<DynValue> {
        let what = format!("allocating `{name}`");
        let Some(device) = &self.device else {
            let t = Tensor::<T>::new(session.allocator(), shape.to_vec()).map_err(moving(&what))?;
            return Ok(t.into_dyn());
        };
        let mut t = Tensor::<T>::new(device, shape.to_vec()).map_err(moving(&what))?;
        if zeroed && shape.iter().product::<usize>() > 0 {
            let zeros = Tensor::from_array(ArrayD::<T>::from_elem(IxDyn(shape), T::default()))
                .map_err(moving(&what))?;
            zeros.copy_into(&mut t).map_err(moving(&what))?;
        }
        Ok(t.into_dyn())
    }

    /// A zeroed host buffer of `shape` for rows being moved into a device state.
    pub(super) fn host_buffer<T: StateElement>(shape: &[usize], name: &str) -> Result<DynValue> {
        Tensor::from_array(ArrayD::<T>::from_elem(IxDyn(shape), T::default()))
            .map(|t| t.into_dyn())
            .map_err(moving(&format!("allocating a host copy of `{name}`")))
    }

    /// `value` readable on the host: itself when it is there, else a host copy.
    pub(super) fn to_host<'v>(value: &'v DynValue, name: &str) -> Result<OnHost<'v>> {
        let what = format!("copying `{name}` to the host");
        let tensor = value
            .view()
            .downcast::<DynTensorValueType>()
            .map_err(moving(&what))?;
        if tensor.memory_info().is_cpu_accessible() {
            return Ok(OnHost::Itself(value));
        }
        Ok(OnHost::Copy(Self::host_copy(value, name)?))
    }

    /// A host copy of `value` (wherever it is).
    pub(super) fn host_copy(value: &DynValue, name: &str) -> Result<DynValue> {
        let what = format!("copying `{name}` to the host");
        let tensor = value
            .view()
            .downcast::<DynTensorValueType>()
            .map_err(moving(&what))?;
        let host = tensor.to(AllocationDevice::CPU, 0).map_err(moving(&what))?;
        Ok(host.into_dyn())
    }

    /// A host value moved to the state's memory (itself on the host).
    pub(super) fn to_state(&self, host: DynValue, name: &str) -> Result<DynValue> {
        let MemoryPlace::Cuda { device_id } = self.place else {
            return Ok(host);
        };
        let what = format!("copying `{name}` to {}", self.place);
        let id = i32::try_from(device_id)
            .map_err(|_| Error::InvalidInput(format!("device id {device_id} is out of range")))?;
        let tensor = host
            .downcast::<DynTensorValueType>()
            .map_err(moving(&what))?;
        let moved = tensor
            .to(AllocationDevice::CUDA, id)
            .map_err(moving(&what))?;
        Ok(moved.into_dyn())
    }

    /// Copies host value `host` into state buffer `target` (same shape; any memory).
    pub(super) fn write_back(host: &DynValue, target: &mut DynValue, name: &str) -> Result<()> {
        let what = format!("copying rows back into `{name}`");
        let source = host
            .view()
            .downcast::<DynTensorValueType>()
            .map_err(moving(&what))?;
        let target = target
            .view_mut()
            .downcast::<DynTensorValueType>()
            .map_err(moving(&what))?;
        source.copy_into(target).map_err(moving(&what))
    }
}

/// A state value readable on the host: the value itself, or a host copy of a device value.
pub(super) enum OnHost<'v> {
    Itself(&'v DynValue),
    Copy(DynValue),
}

impl Deref for OnHost<'_> {
    type Target = DynValue;

    fn deref(&self) -> &DynValue {
        match self {
            OnHost::Itself(v) => v,
            OnHost::Copy(v) => v,
        }
    }
}

/// An element type decoder state can have (float32, float16, bfloat16; see the manifest's
/// state dtypes).
pub(super) trait StateElement:
    ort::value::PrimitiveTensorElementType + Clone + Default + std::fmt::Debug + 'static
{
}

impl<T> StateElement for T where
    T: ort::value::PrimitiveTensorElementType + Clone + Default + std::fmt::Debug + 'static
{
}
