//! Encoding into a reused buffer allocates nothing: counted with a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use secsgate::secs2::testdata;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn encode_into_a_reused_buffer_allocates_nothing() {
    let items = [
        testdata::empty_item(),
        testdata::u4_1024(),
        testdata::s6f11_body(),
        testdata::nested_100k(),
    ];
    let mut buf = Vec::new();
    for item in &items {
        buf.clear();
        item.encode_into(&mut buf).unwrap(); // grows the buffer once
        let first = buf.clone();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..10 {
            buf.clear();
            item.encode_into(&mut buf).unwrap();
        }
        let after = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(
            after - before,
            0,
            "{} allocations re-encoding",
            after - before
        );
        assert_eq!(buf, first);
    }
}
