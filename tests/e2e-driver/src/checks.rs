//! Counting assertions: `  ok    NAME` and `  FAIL  NAME: detail` lines, a summary, the exit
//! status (the format tests/e2e/lib.sh prints, so runs before and after the move compare).

use std::fmt::Display;

#[derive(Debug, Default)]
pub struct Checks {
    pub passed: usize,
    pub failures: Vec<String>,
}

impl Checks {
    pub fn pass(&mut self, name: &str) {
        self.passed += 1;
        println!("  ok    {name}");
    }

    pub fn fail(&mut self, name: &str, detail: &str) {
        let line = if detail.is_empty() {
            name.to_string()
        } else {
            format!("{name}: {detail}")
        };
        println!("  FAIL  {line}");
        self.failures.push(line);
    }

    /// Passes when `ok`; `detail` says what was seen otherwise.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Display) {
        if ok {
            self.pass(name);
        } else {
            self.fail(name, &detail.to_string());
        }
    }

    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, name: &str, expected: T, actual: T) {
        let detail = format!("expected {expected:?}, got {actual:?}");
        self.check(name, expected == actual, detail);
    }

    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// The failures again and the tally line.
    pub fn summary(&self) {
        println!();
        if !self.failures.is_empty() {
            println!("failures:");
            for f in &self.failures {
                println!("  - {f}");
            }
        }
        println!("e2e: {} passed, {} failed", self.passed, self.failed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_details() {
        let mut c = Checks::default();
        c.eq("same", "a", "a");
        c.eq("differs", 1, 2);
        c.check("pred", false, "seen x");
        c.fail("bare", "");
        assert_eq!(c.passed, 1);
        assert_eq!(
            c.failures,
            vec!["differs: expected 1, got 2", "pred: seen x", "bare"]
        );
    }
}
