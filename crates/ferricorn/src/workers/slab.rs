//! The connection table of the poller-driven workers (evloop, asgi): slots
//! reused after a connection closes, so a slot index is a stable poller
//! token (`CONN_BASE + index`) for as long as its connection lives.

/// Connections by slot; free slots are reused, most recently freed first.
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Store `item`; its slot index.
    pub(crate) fn insert(&mut self, item: T) -> usize {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            self.slots[i] = Some(item);
            i
        } else {
            self.slots.push(Some(item));
            self.slots.len() - 1
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// Take the item out of slot `i` (the slot becomes free).
    pub(crate) fn remove(&mut self, i: usize) -> Option<T> {
        let item = self.slots.get_mut(i).and_then(Option::take)?;
        self.free.push(i);
        self.len -= 1;
        Some(item)
    }

    /// How many items are stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The occupied slots, in index order (a copy: the caller may remove).
    pub(crate) fn indices(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .collect()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn slots_are_reused_and_counted() {
        let mut s = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!((a, b, s.len()), (0, 1, 2));
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.insert("c"), a);
        assert_eq!(s.indices(), vec![0, 1]);
        assert_eq!(s.get(1), Some(&"b"));
        *s.get_mut(0).unwrap() = "d";
        assert_eq!(s.iter_mut().map(|x| *x).collect::<Vec<_>>(), vec!["d", "b"]);
    }
}
