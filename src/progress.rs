//! The progress shown on stderr while a terminal watches (nothing otherwise): a spinner
//! counting lines for the passes over an export, a bar of steps for the database.

/// A progress bar on stderr, shown only while a terminal watches.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    /// A bar of `len` steps, or a spinner counting when `len` is None.
    pub fn new(show: bool, what: &str, len: Option<u64>) -> Progress {
        use std::io::IsTerminal;
        if !show || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let (bar, template) = match len {
            Some(n) => (
                indicatif::ProgressBar::new(n),
                "{msg} [{bar:30}] {human_pos}/{human_len} ({eta} left)",
            ),
            None => (
                indicatif::ProgressBar::new_spinner(),
                "{spinner} {msg}: {human_pos} ({per_sec}, {elapsed})",
            ),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Progress(Some(bar))
    }

    /// Counts steps done.
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Changes the message.
    pub fn message(&self, what: &str) {
        if let Some(b) = &self.0 {
            b.set_message(what.to_string());
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Progress {
    /// A spinner counting lines, for a pass over an export.
    pub fn lines(show: bool, what: &str) -> Progress {
        let p = Progress::new(show, what, None);
        if let Some(b) = &p.0 {
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg}: {human_pos} lines in {elapsed}",
                )
                .expect("a valid template"),
            );
        }
        p
    }
}
