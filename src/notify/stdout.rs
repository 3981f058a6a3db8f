//! Incidents printed as readable cards: the notifier when Slack is not configured.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Notifier, NotifyError};
use crate::incident::{Incident, RootCause, Transition};
use crate::redact;

/// Prints a card when an incident opens or resolves and one line when it changes.
pub struct StdoutNotifier {
    // A std Mutex: the lock is held only for one synchronous write of a few
    // hundred bytes, never across an `.await`, and it keeps cards from
    // interleaving.
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for StdoutNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutNotifier").finish_non_exhaustive()
    }
}

impl Default for StdoutNotifier {
    fn default() -> Self {
        StdoutNotifier::new()
    }
}

impl StdoutNotifier {
    /// Writes to the process's stdout.
    pub fn new() -> StdoutNotifier {
        StdoutNotifier::with_writer(std::io::stdout())
    }

    /// Writes to `w` (tests capture output this way).
    pub fn with_writer(w: impl Write + Send + 'static) -> StdoutNotifier {
        StdoutNotifier {
            out: Mutex::new(Box::new(w)),
        }
    }
}

#[async_trait]
impl Notifier for StdoutNotifier {
    async fn notify(&self, t: &Transition) -> Result<(), NotifyError> {
        let text = match t {
            Transition::Opened(i) => card("OPENED", i),
            Transition::Updated(i) => update_line(i),
            Transition::Resolved(i) => card("RESOLVED", i),
        };
        // Incidents are built from redacted events; this pass is the boundary
        // check for anything that reached them another way.
        let text = redact::redact_all(&text);
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    }
}

fn card(what: &str, i: &Incident) -> String {
    let mut s = String::with_capacity(512);
    let _ = writeln!(
        s,
        "== [{}] {what} {} ({}) ==",
        i.severity.as_str().to_uppercase(),
        i.id,
        i.rule
    );
    let _ = writeln!(s, "  {}", one_line(&i.title));
    if let Some(c) = i.root_causes.first() {
        let _ = writeln!(s, "  root cause: {}", cause(c));
    }
    let _ = writeln!(
        s,
        "  window:     {} to {} (opened {})",
        i.window.start.format("%Y-%m-%d %H:%M:%S"),
        i.window.end.format("%H:%M:%S UTC"),
        i.opened_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if let Some(r) = i.resolved_at {
        let _ = writeln!(s, "  resolved:   {}", r.format("%Y-%m-%d %H:%M:%S UTC"));
    }
    if !i.summary.trim().is_empty() {
        let _ = writeln!(s, "  summary:");
        for line in i.summary.lines().filter(|l| !l.trim().is_empty()) {
            let _ = writeln!(s, "    {}", line.trim_end());
        }
    }
    if let Some(url) = &i.episode.url {
        let _ = writeln!(s, "  page:       {url}");
    }
    if !i.links.is_empty() {
        let _ = writeln!(s, "  links:");
        for l in &i.links {
            let _ = writeln!(s, "    {}: {}", one_line(&l.title), l.url);
        }
    }
    s.push('\n');
    s
}

fn update_line(i: &Incident) -> String {
    let page = i
        .episode
        .url
        .as_deref()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    format!(
        "[{}] UPDATED {} ({}): {}{page}\n",
        i.severity.as_str(),
        i.id,
        i.rule,
        one_line(&i.title)
    )
}

/// `provider=stripe, region=us-west-2: 1702 of 4210 failed (40.43% vs 0.51% baseline)`.
fn cause(c: &RootCause) -> String {
    let dims: Vec<String> = c.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let dims = if dims.is_empty() {
        "all traffic".to_string()
    } else {
        dims.join(", ")
    };
    match c.expected_events {
        Some(expected) => format!(
            "{dims}: {} events (expected {expected:.0}), score {:.2}",
            c.events, c.score
        ),
        None => format!(
            "{dims}: {} of {} failed ({:.2}% vs {:.2}% baseline), score {:.2}",
            c.failures,
            c.events,
            c.failure_rate * 100.0,
            c.baseline_rate * 100.0,
            c.score
        ),
    }
}

/// Titles are one line; a stray newline would break the card's shape.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::incident::{ts, Status};
    use crate::store::memory::fixtures::incident;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    #[tokio::test]
    async fn prints_cards_and_update_lines() {
        let buf = Captured::default();
        let n = StdoutNotifier::with_writer(buf.clone());
        let mut inc = incident("inc_1", 1_772_410_841_000);
        inc.title = "stripe in us-west-2: auth technical failures 40.4% (baseline 0.51%)".into();
        inc.summary = "What: failures\nWhere: stripe".into();

        n.notify(&Transition::Opened(inc.clone())).await.unwrap();
        let out = buf.take();
        assert!(
            out.starts_with("== [CRITICAL] OPENED inc_1 (auth_technical_failures) ==\n"),
            "{out}"
        );
        assert!(
            out.contains("  stripe in us-west-2: auth technical failures 40.4%"),
            "{out}"
        );
        assert!(
            out.contains("root cause: provider=stripe, region=us-west-2: 1702 of 4210 failed (40.40% vs 0.51% baseline), score 0.94"),
            "{out}"
        );
        assert!(
            out.contains("window:     2026-03-02 00:15:41 to 00:20:41 UTC"),
            "{out}"
        );
        assert!(
            out.contains("    What: failures\n    Where: stripe\n"),
            "{out}"
        );
        assert!(
            out.contains("    Auth: https://grafana.example.com/d/x"),
            "{out}"
        );
        assert!(
            !out.contains("page:"),
            "no page without a public URL: {out}"
        );
        inc.episode.url = Some("https://faultline.example.com/ui/incidents/inc_1".into());
        n.notify(&Transition::Opened(inc.clone())).await.unwrap();
        let out = buf.take();
        assert!(
            out.contains("  page:       https://faultline.example.com/ui/incidents/inc_1\n"),
            "{out}"
        );

        n.notify(&Transition::Updated(inc.clone())).await.unwrap();
        let out = buf.take();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with("[critical] UPDATED inc_1"), "{out}");

        inc.status = Status::Resolved;
        inc.resolved_at = Some(ts(1_772_411_841_000));
        n.notify(&Transition::Resolved(inc)).await.unwrap();
        let out = buf.take();
        assert!(out.contains("RESOLVED inc_1"), "{out}");
        assert!(out.contains("resolved:   2026-03-02 00:37:21 UTC"), "{out}");
    }

    #[tokio::test]
    async fn redacts_card_numbers() {
        let buf = Captured::default();
        let n = StdoutNotifier::with_writer(buf.clone());
        let mut inc = incident("inc_1", 1_772_410_841_000);
        inc.title = "card 4111 1111 1111 1111".into();
        inc.summary = "pan 4111111111111111".into();
        inc.root_causes[0]
            .dims
            .insert("merchant_id".into(), "4111-1111-1111-1111".into());
        n.notify(&Transition::Opened(inc)).await.unwrap();
        let out = buf.take();
        assert!(
            !out.contains("1111 1111") && !out.contains("4111111111111111"),
            "{out}"
        );
        assert!(!out.contains("1111-1111"), "{out}");
        assert!(out.contains(redact::PAN_MASK), "{out}");
    }
}
