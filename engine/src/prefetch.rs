//! Memory prefetch hints: the engine starts loading the hash-table slots of the next command
//! while it works on the current one, so cache misses overlap instead of queueing one after
//! another. A hint only: it never changes what the engine computes.
#![allow(unsafe_code)]

/// Hints that `*r` will be read soon.
#[inline(always)]
pub(crate) fn read<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is part of the
    // baseline target); a prefetch never dereferences its pointer architecturally, so any
    // address is allowed, and this one comes from a live reference anyway.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(r).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}
