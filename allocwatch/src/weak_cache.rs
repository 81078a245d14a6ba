//! A cache of values shared while someone holds them: entries are weak
//! references, so a value goes when its last user drops it, and the entry
//! with it at the next lookup.

use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Values by key, each alive while an `Arc` of it is held elsewhere.
pub struct WeakCache<K, V>(Mutex<Vec<(K, Weak<V>)>>);

impl<K: PartialEq, V> Default for WeakCache<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: PartialEq, V> WeakCache<K, V> {
    #[must_use]
    pub const fn new() -> Self {
        WeakCache(Mutex::new(Vec::new()))
    }

    /// The live value of `key`, or a new one from `make` (called under the
    /// cache's lock, so two callers never make the same value twice).
    ///
    /// # Errors
    /// Those of `make`.
    pub fn get_or_try_insert<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|(_, w)| w.strong_count() > 0);
        if let Some(v) = cache
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(v);
        }
        let v = Arc::new(make()?);
        cache.push((key, Arc::downgrade(&v)));
        Ok(v)
    }

    /// [`WeakCache::get_or_try_insert`] with a `make` that cannot fail.
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        match self.get_or_try_insert(key, || Ok::<_, std::convert::Infallible>(make())) {
            Ok(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_while_held_then_made_again() {
        let cache: WeakCache<u32, String> = WeakCache::new();
        let make = |s: &str| Ok::<_, ()>(s.to_string());
        let a = cache.get_or_try_insert(1, || make("one")).unwrap();
        let b = cache.get_or_try_insert(1, || make("other")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = cache.get_or_try_insert(2, || make("two")).unwrap();
        assert_eq!(*c, "two");
        drop((a, b));
        assert_eq!(
            *cache.get_or_try_insert(1, || make("again")).unwrap(),
            "again"
        );
        assert!(cache.get_or_try_insert(3, || Err::<String, _>(())).is_err());
    }
}
