//! The two resources the lab's workload writes to, and what they make of the writes.

/// Rejects writes whose token is lower than the highest it has seen (a fencing-aware store).
#[derive(Debug, Default)]
pub struct Fenced {
    highest: u64,
}

impl Fenced {
    /// Sees a new holder's token (its first write goes out with its acquisition).
    pub fn observe(&mut self, token: u64) -> bool {
        self.write(token)
    }

    /// Applies a write; false if rejected as stale.
    pub fn write(&mut self, token: u64) -> bool {
        if token < self.highest {
            return false;
        }
        self.highest = token;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_rejects_lower_tokens_only() {
        let mut f = Fenced::default();
        assert!(f.observe(5));
        assert!(f.write(5));
        assert!(f.observe(9));
        assert!(!f.write(5));
        assert!(f.write(9));
    }
}
