//! NDJSON files (replay): lines read with a bound, so one endless line cannot
//! exhaust memory.

use std::io::BufRead;

use crate::event::MAX_EVENT_BYTES;

/// Lines of `reader` without their newline. A line longer than the largest
/// accepted event is skipped to its end and yielded as an oversized marker (a
/// buffer one byte over the limit), so it is counted as `oversized`, never held.
/// A read error ends the iteration (after logging it).
pub fn lines<R: BufRead>(reader: R) -> Lines<R> {
    Lines {
        reader,
        done: false,
    }
}

/// Iterator from [`lines`].
pub struct Lines<R> {
    reader: R,
    done: bool,
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let mut line = Vec::new();
        let mut oversized = false;
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "reading events failed");
                    self.done = true;
                    break;
                }
            };
            if buf.is_empty() {
                self.done = true;
                break;
            }
            let (chunk, found_newline) = match memchr(b'\n', buf) {
                Some(i) => (&buf[..i], true),
                None => (buf, false),
            };
            if !oversized {
                if line.len() + chunk.len() > MAX_EVENT_BYTES {
                    oversized = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            let used = chunk.len() + found_newline as usize;
            self.reader.consume(used);
            if found_newline {
                break;
            }
        }
        if oversized {
            return Some(vec![b' '; MAX_EVENT_BYTES + 1]);
        }
        if self.done && line.is_empty() {
            return None;
        }
        Some(line)
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_bounds_long_ones() {
        let mut data = b"a\nbb\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_EVENT_BYTES * 3));
        data.extend(b"\nlast");
        let got: Vec<Vec<u8>> = lines(std::io::BufReader::with_capacity(1000, &data[..])).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], b"a");
        assert_eq!(got[1], b"bb");
        assert_eq!(got[2].len(), MAX_EVENT_BYTES + 1);
        assert_eq!(got[3], b"last");
    }
}
