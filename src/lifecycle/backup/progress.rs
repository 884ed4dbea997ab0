//! Progress of backup, restore and verify on the command line: an indicatif
//! bar (bytes, rate, ETA) on a terminal, plain lines otherwise.
use super::Progress;
use std::io::IsTerminal as _;
use std::sync::Mutex;

/// A bar on a terminal, log lines elsewhere.
pub enum Cli {
    Bar(Mutex<Option<indicatif::ProgressBar>>),
    Lines,
}

impl Cli {
    /// A bar when stderr is a terminal.
    pub fn detect() -> Cli {
        if std::io::stderr().is_terminal() { Cli::Bar(Mutex::new(None)) } else { Cli::Lines }
    }

    fn bar(&self, f: impl FnOnce(&mut Option<indicatif::ProgressBar>)) {
        if let Cli::Bar(bar) = self {
            let mut guard = match bar.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            f(&mut guard);
        }
    }
}

impl Progress for Cli {
    fn start(&self, what: &str, total: u64) {
        match self {
            Cli::Lines => eprintln!("{what}: started ({})", crate::lifecycle::upgrade::human_bytes(total)),
            Cli::Bar(_) => self.bar(|bar| {
                let style = indicatif::ProgressStyle::with_template(
                    "{msg:8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
                let b = indicatif::ProgressBar::new(total).with_style(style).with_message(what.to_string());
                *bar = Some(b);
            }),
        }
    }

    fn advance(&self, bytes: u64) {
        self.bar(|bar| {
            if let Some(b) = bar {
                if b.position() + bytes > b.length().unwrap_or(0) {
                    b.set_length(b.position() + bytes);
                }
                b.inc(bytes);
            }
        });
    }

    fn finish(&self) {
        match self {
            Cli::Lines => eprintln!("done"),
            Cli::Bar(_) => self.bar(|bar| {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
            }),
        }
    }
}
