//! A global-allocator wrapper that counts allocations per thread, so the binary can prove the
//! engine thread allocates nothing while serving.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

#[inline]
fn bump() {
    // `try_with` fails only during thread teardown; a const-initialised Cell never allocates.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

/// Allocations (including reallocations) made so far by the calling thread.
#[must_use]
pub fn thread_allocations() -> u64 {
    ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}

/// Wraps another global allocator and counts, per thread, every allocation it serves.
#[derive(Debug, Default)]
pub struct CountingAlloc<A>(pub A);

// SAFETY: every method forwards to the wrapped allocator with the caller's arguments unchanged,
// so the wrapped allocator's guarantees hold; counting touches only a const-initialised
// thread-local `Cell<u64>`, which neither allocates nor reenters the allocator.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded with the caller's (valid) layout.
        unsafe { self.0.alloc(layout) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded with the caller's (valid) layout.
        unsafe { self.0.alloc_zeroed(layout) }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by the wrapped allocator with `layout`.
        unsafe { self.0.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: `ptr` was allocated by the wrapped allocator with `layout`.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}
