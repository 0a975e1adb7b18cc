//! The process's allocator: mimalloc, asked the plain way when it can be.
//!
//! Events are allocated on one thread and freed on another; mimalloc handles
//! that far better than glibc's malloc (see `busline bench fanout`). The
//! `mimalloc` crate's allocator asks for every block with its aligned API,
//! which mimalloc 3 serves from its fast path only while the page at hand
//! has a free block that happens to be aligned, and otherwise by allocating
//! more than asked and aligning inside. Every mimalloc block is aligned to
//! a machine word at least, so a layout that needs no more than that is
//! asked for with the plain `mi_malloc`, which always takes the fast path.

#![allow(unsafe_code)] // The `GlobalAlloc` contract: see each method.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has (its blocks are whole words).
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc, with the plain calls for word-aligned layouts.
pub(crate) struct Allocator;

// SAFETY: every method forwards to mimalloc, which returns blocks of at
// least the size asked, aligned to `layout.align()` (a word at least from
// the plain calls, so those are used only when that is enough), or null;
// `dealloc` and `realloc` get blocks that came from these methods.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()) as *mut u8
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()) as *mut u8
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}
