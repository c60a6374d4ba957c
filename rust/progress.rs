//! The progress line of `fastsft prep` on stderr, and counts written as English.

use std::time::Instant;

use crate::pipeline::Counts;

/// A one-line progress display on stderr, redrawn at most twice a second.
/// On a terminal the line is redrawn in place; in a log file a plain line is written every 10 s.
pub struct Progress {
    enabled: bool,
    terminal: bool,
    last: Option<Instant>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        use std::io::IsTerminal;
        Progress { enabled, terminal: std::io::stderr().is_terminal(), last: None }
    }

    fn line(counts: &Counts, started: Instant) -> String {
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        format!(
            "fastsft prep: {}, {}, {:.0} records/s, {:.2}M tokens/s",
            plural(counts.read, "record"),
            plural(counts.tokens, "token"),
            counts.read as f64 / seconds,
            counts.tokens as f64 / seconds / 1e6
        )
    }

    pub fn update(&mut self, counts: &Counts, started: Instant) {
        let interval = if self.terminal { 500 } else { 10_000 };
        if !self.enabled || self.last.is_some_and(|t| t.elapsed().as_millis() < interval) {
            return;
        }
        if self.last.is_none() && !self.terminal {
            self.last = Some(Instant::now());
            return;
        }
        self.last = Some(Instant::now());
        if self.terminal {
            eprint!("\r{}\x1b[K", Self::line(counts, started));
        } else {
            eprintln!("{}", Self::line(counts, started));
        }
    }

    pub fn finish(&mut self, counts: &Counts, started: Instant) {
        if self.enabled && self.terminal {
            eprintln!("\r{}\x1b[K", Self::line(counts, started));
        }
    }
}

/// `1 record`, `2 records`: counts in messages read as English.
pub fn plural(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}
