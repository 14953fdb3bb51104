//! The binary's memory allocator: mimalloc for the small, short-lived allocations that most of
//! lookmig's work makes (glibc's malloc/free took a third of `restore --database`'s client
//! cycles), the system allocator for large blocks.
//!
//! Large blocks stay with glibc because it grows them in place (`mremap`): a line buffer going
//! from 32 to 64 MiB costs 64 MiB of address space there, and 96 MiB or more with mimalloc,
//! which copies — enough to break the bounded-memory promise on a hostile line (see
//! `tests/it/bad_input.rs`, which runs lookmig with its address space capped).
//!
//! mimalloc is built without asking for transparent huge pages on its arenas (the `no_thp`
//! feature): where the kernel grants them on request (`madvise`), they made a run's peak RSS
//! grow by 2 MiB steps, 102–114 MB → 80–88 MB for `plan` at 50,000 reports, at the same CPU.
//!
//! Which allocator owns a block follows from its size alone, so `dealloc` (given the layout
//! the block was allocated with) always returns it to its owner; a `realloc` across the
//! threshold moves the block.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of at least this many bytes come from the system allocator.
const LARGE: usize = 1 << 20;

/// The global allocator of the `lookmig` binary (see the module docs).
pub struct Split;

fn large(size: usize) -> bool {
    size >= LARGE
}

unsafe impl GlobalAlloc for Split {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if large(layout.size()) {
            System.alloc(layout)
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if large(layout.size()) {
            System.alloc_zeroed(layout)
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if large(layout.size()) {
            System.dealloc(ptr, layout)
        } else {
            mimalloc::MiMalloc.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (large(layout.size()), large(new_size)) {
            (true, true) => System.realloc(ptr, layout, new_size),
            (false, false) => mimalloc::MiMalloc.realloc(ptr, layout, new_size),
            _ => {
                // Crossing the threshold: a new block from the other allocator, then a copy.
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_their_contents_across_the_threshold_both_ways() {
        let a = Split;
        unsafe {
            let layout = Layout::from_size_align(1000, 8).unwrap();
            let p = a.alloc(layout);
            assert!(!p.is_null());
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            let q = a.realloc(p, layout, 3 * LARGE);
            assert!(!q.is_null());
            let big = Layout::from_size_align(3 * LARGE, 8).unwrap();
            let r = a.realloc(q, big, 4 * LARGE);
            let bigger = Layout::from_size_align(4 * LARGE, 8).unwrap();
            let s = a.realloc(r, bigger, 500);
            for i in 0..500 {
                assert_eq!(*s.add(i), (i % 251) as u8);
            }
            a.dealloc(s, Layout::from_size_align(500, 8).unwrap());
        }
    }
}
