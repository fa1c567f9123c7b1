//! Values padded to their own cache lines, so counters written by different threads never
//! share a line (false sharing makes every write a cross-core miss).

/// `T` aligned and padded to 128 bytes: a cache line, and its adjacent-line prefetch pair on
/// x86.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for CachePadded<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}
