//! Boxes that go back to their thread when dropped, for the values every request boxes (its
//! head, its stream information, its response's head, its upstream body).
//!
//! With 64 requests in flight on a worker, glibc's per-thread cache (7 chunks per size)
//! runs dry and every such box paid a trip through the general allocator to be made and
//! another to be freed: 300 instructions a box per HTTP/2 request, 140 per HTTP/1.1 one
//! (callgrind). A spare box costs a pop and a push.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

/// Empty boxes kept per type and thread at most: more than a busy worker has requests in
/// flight (a burst past it frees its extra boxes as its requests end).
const KEPT: usize = 128;

/// A thread's empty boxes for values of type `T`.
pub struct SpareBoxes<T> {
    boxes: RefCell<Vec<Box<Option<T>>>>,
}

impl<T> SpareBoxes<T> {
    /// None yet (`const`, for a `thread_local!`).
    pub const fn new() -> Self {
        SpareBoxes { boxes: RefCell::new(Vec::new()) }
    }
}

impl<T> Default for SpareBoxes<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A type whose boxes are reused: where its thread keeps the spare ones.
pub trait Reusable: Sized + 'static {
    fn spares() -> &'static LocalKey<SpareBoxes<Self>>;
}

/// A boxed `T`, in a box its thread had spare when there was one; dropped, its value is
/// dropped at once (nothing it holds outlives it) and the empty box kept for the next.
pub struct Reused<T: Reusable>(Option<Box<Option<T>>>);

impl<T: Reusable> Reused<T> {
    #[inline]
    pub fn new(value: T) -> Self {
        let spare = T::spares().try_with(|spares| spares.boxes.borrow_mut().pop()).ok().flatten();
        let slot = match spare {
            Some(mut slot) => {
                *slot = Some(value);
                slot
            }
            None => Box::new(Some(value)),
        };
        Reused(Some(slot))
    }

    /// The value, out of its box (which goes back to the spares).
    pub fn into_inner(mut this: Self) -> T {
        this.0.as_deref_mut().and_then(Option::take).expect("a reused box holds its value until dropped")
    }
}

impl<T: Reusable> Drop for Reused<T> {
    #[inline]
    fn drop(&mut self) {
        let Some(mut slot) = self.0.take() else { return };
        // The value first, outside the borrow: its drop may give back boxes of its own.
        *slot = None;
        let _ = T::spares().try_with(|spares| {
            let mut boxes = spares.boxes.borrow_mut();
            if boxes.len() < KEPT {
                boxes.push(slot);
            }
        });
    }
}

impl<T: Reusable> Deref for Reused<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        self.0.as_deref().and_then(Option::as_ref).expect("a reused box holds its value until dropped")
    }
}

impl<T: Reusable> DerefMut for Reused<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_deref_mut().and_then(Option::as_mut).expect("a reused box holds its value until dropped")
    }
}

impl<T: Reusable + std::fmt::Debug> std::fmt::Debug for Reused<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        T::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    struct Held(Rc<()>);

    thread_local! {
        static SPARE_HELD: SpareBoxes<Held> = const { SpareBoxes::new() };
    }

    impl Reusable for Held {
        fn spares() -> &'static LocalKey<SpareBoxes<Self>> {
            &SPARE_HELD
        }
    }

    fn spare_count() -> usize {
        SPARE_HELD.with(|spares| spares.boxes.borrow().len())
    }

    #[test]
    fn a_dropped_box_lets_go_of_its_value_and_is_used_again() {
        let owner = Rc::new(());
        let first = Reused::new(Held(owner.clone()));
        let address = std::ptr::from_ref::<Held>(&first);
        assert_eq!(Rc::strong_count(&owner), 2);
        drop(first);
        // The value is gone with its box's owner; the box waits, empty.
        assert_eq!(Rc::strong_count(&owner), 1);
        assert_eq!(spare_count(), 1);
        let second = Reused::new(Held(owner.clone()));
        assert_eq!(std::ptr::from_ref::<Held>(&second), address);
        assert_eq!(spare_count(), 0);
        let Held(held) = &*second;
        assert!(Rc::ptr_eq(held, &owner));
    }

    #[test]
    fn no_more_than_kept_boxes_wait() {
        let owner = Rc::new(());
        let many: Vec<_> = (0..KEPT + 10).map(|_| Reused::new(Held(owner.clone()))).collect();
        drop(many);
        assert_eq!(spare_count(), KEPT);
        assert_eq!(Rc::strong_count(&owner), 1);
    }
}
