//! The progress block of `sync` on stderr (docs/ARCHITECTURE.md, "Progress").
//!
//! A [`Screen`] owns stderr while it draws: the block is redrawn in place with plain ANSI
//! escapes (cursor up, erase below), and every log line goes through [`Logs`], which erases the
//! block, prints the line and draws the block again below it. So logs keep their level and
//! scroll above the block, and neither garbles the other. An inactive screen (no block: off a
//! terminal, or `--progress never`) passes log lines straight through.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing_subscriber::fmt::MakeWriter;

/// stderr, shared by the progress block and the logs.
pub struct Screen {
    inner: Mutex<Inner>,
}

struct Inner {
    out: Box<dyn Write + Send>,
    /// Whether a block is drawn.
    active: bool,
    /// Truncate lines to the terminal's width (a wrapped line would break the redraw).
    fit: bool,
    /// The last block drawn, to draw again after a log line.
    frame: Vec<String>,
    /// Lines of the block currently on screen.
    drawn: usize,
}

impl Screen {
    /// A screen writing to `out`; `active` when it draws a block; `fit` to cut lines at the
    /// terminal's width.
    pub fn new(out: Box<dyn Write + Send>, active: bool, fit: bool) -> Arc<Screen> {
        Arc::new(Screen {
            inner: Mutex::new(Inner {
                out,
                active,
                fit,
                frame: Vec::new(),
                drawn: 0,
            }),
        })
    }

    pub fn is_active(&self) -> bool {
        self.lock().active
    }

    /// Replace the block by `frame`.
    pub fn draw(&self, frame: Vec<String>) {
        let mut inner = self.lock();
        if !inner.active {
            return;
        }
        inner.frame = frame;
        // A failed write to stderr has nowhere to be reported; the next frame tries again.
        let _ = inner.erase().and_then(|()| inner.redraw());
    }

    /// Leave the last block on screen and stop drawing: what follows prints below it.
    pub fn finish(&self, frame: Vec<String>) {
        self.draw(frame);
        let mut inner = self.lock();
        inner.active = false;
        inner.drawn = 0;
        inner.frame.clear();
    }

    /// Print a log line above the block.
    fn log(&self, line: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        if !inner.active {
            return inner.out.write_all(line);
        }
        inner.erase()?;
        inner.out.write_all(line)?;
        inner.redraw()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while printing leaves nothing half-updated that matters for display.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Move up to the block's first line and erase from there to the end of the screen.
    fn erase(&mut self) -> io::Result<()> {
        if self.drawn > 0 {
            write!(self.out, "\r\x1b[{}A\x1b[J", self.drawn)?;
            self.drawn = 0;
        }
        Ok(())
    }

    fn redraw(&mut self) -> io::Result<()> {
        let width = if self.fit { terminal_width() } else { None };
        let mut text = String::new();
        for line in &self.frame {
            match width {
                Some(width) if line.chars().count() >= width => {
                    text.extend(line.chars().take(width.saturating_sub(1)));
                }
                _ => text.push_str(line),
            }
            text.push('\n');
        }
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        self.drawn = self.frame.len();
        Ok(())
    }
}

/// The log writer: each log line is printed through the screen.
#[derive(Clone)]
pub struct Logs(pub Arc<Screen>);

impl<'a> MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Write for Logs {
    /// tracing's formatter hands over each event whole, in one `write_all`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.log(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Columns of the terminal on stderr, if it is one.
#[cfg(unix)]
fn terminal_width() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes a `winsize` into the struct it is given, which lives
    // for the whole call; on a descriptor that is not a terminal it fails and writes nothing.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

#[cfg(not(unix))]
fn terminal_width() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    fn lines(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_log_line_prints_above_the_block_which_is_drawn_again() {
        let out = Shared::default();
        let screen = Screen::new(Box::new(out.clone()), true, false);
        screen.draw(lines(&["head", "tickets"]));
        assert_eq!(out.take(), "head\ntickets\n");
        screen.draw(lines(&["head", "users"]));
        assert_eq!(out.take(), "\r\x1b[2A\x1b[Jhead\nusers\n");
        let mut logs = Logs(screen.clone());
        logs.write_all(b"WARN retrying\n").unwrap();
        assert_eq!(out.take(), "\r\x1b[2A\x1b[JWARN retrying\nhead\nusers\n");
        // The last block stays; what follows prints below it, untouched.
        screen.finish(lines(&["head", "done"]));
        assert_eq!(out.take(), "\r\x1b[2A\x1b[Jhead\ndone\n");
        assert!(!screen.is_active());
        logs.write_all(b"INFO after\n").unwrap();
        screen.draw(lines(&["late"]));
        assert_eq!(out.take(), "INFO after\n");
    }

    #[test]
    fn an_inactive_screen_passes_logs_through_and_draws_nothing() {
        let out = Shared::default();
        let screen = Screen::new(Box::new(out.clone()), false, false);
        screen.draw(lines(&["head"]));
        Logs(screen.clone()).write_all(b"INFO line\n").unwrap();
        screen.finish(lines(&["head"]));
        assert_eq!(out.take(), "INFO line\n");
    }
}
