//! A value replaced whole while it is in use: readers take an `Arc` of the
//! current value and keep it; a writer swaps in a new one. Used for the master
//! key (rotation) and the TLS certificate (SIGHUP reload).
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    pub fn new(value: T) -> Self {
        Swap(RwLock::new(Arc::new(value)))
    }

    /// The value in force now. A poisoned lock still holds a whole value (the
    /// writer only assigns an `Arc`), so it is used as is.
    pub fn current(&self) -> Arc<T> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, value: T) {
        self.put(Arc::new(value));
    }

    /// Puts a shared value in force.
    pub fn put(&self, value: Arc<T>) {
        let mut guard = match self.0.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = value;
    }
}

#[cfg(test)]
mod tests {
    use super::Swap;

    #[test]
    fn readers_keep_the_value_they_took() {
        let s = Swap::new(1);
        let before = s.current();
        s.replace(2);
        assert_eq!((*before, *s.current()), (1, 2));
    }
}
