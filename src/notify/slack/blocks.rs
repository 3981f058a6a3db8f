//! Block Kit payloads: the incident's first message and its thread replies.
//!
//! Every text here passes [`crate::redact`] first, is escaped for `mrkdwn`
//! (`&`, `<`, `>`) where Slack would read markup, and is cut to Slack's limits
//! on a character boundary with an ellipsis, never inside an escape. The
//! limits are Slack's documented ones; `tests/slack.rs` checks every payload
//! against an independent implementation of them (the `slack_sdk` models).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::incident::{Incident, RootCause, Status};
use crate::redact;
use crate::rules::Severity;

/// Header block text, characters.
pub const MAX_HEADER: usize = 150;
/// Section block text, characters.
pub const MAX_SECTION: usize = 3000;
/// One section field, characters.
pub const MAX_FIELD: usize = 2000;
/// Fields in one section.
pub const MAX_FIELDS: usize = 10;
/// Button text, characters.
pub const MAX_BUTTON_TEXT: usize = 75;
/// Button URL, characters.
pub const MAX_BUTTON_URL: usize = 3000;
/// Elements in one actions block.
pub const MAX_ACTIONS: usize = 25;
/// Blocks in one message.
pub const MAX_BLOCKS: usize = 50;
/// The message's notification text (`text`), characters; Slack truncates
/// at 40 000, a notification shows far less.
pub const MAX_TEXT: usize = 3000;
/// Root-cause candidates listed.
pub const MAX_CANDIDATES: usize = 5;
/// Link buttons shown.
pub const MAX_LINKS: usize = 5;

/// `action_id` of the Acknowledge button.
pub const ACTION_ACK: &str = "faultline_ack";
/// `action_id` of the Resolve button.
pub const ACTION_RESOLVE: &str = "faultline_resolve";
/// `action_id` of the Silence 1h button.
pub const ACTION_SILENCE: &str = "faultline_silence_1h";
/// The message metadata `event_type` that marks an incident's first message.
pub const METADATA_EVENT: &str = "faultline_incident";

/// A message body: notification text, blocks, one coloured attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Fallback / notification text.
    pub text: String,
    /// Top-level blocks.
    pub blocks: Vec<Value>,
    /// Attachments (one: the status bar, coloured by state).
    pub attachments: Vec<Value>,
}

impl Message {
    /// The fields of a `chat.postMessage` / `chat.update` body.
    pub fn into_fields(self, body: &mut serde_json::Map<String, Value>) {
        body.insert("text".into(), Value::String(self.text));
        body.insert("blocks".into(), Value::Array(self.blocks));
        if !self.attachments.is_empty() {
            body.insert("attachments".into(), Value::Array(self.attachments));
        }
    }
}

/// Who last acted on the incident, as the first message shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Acted {
    /// `acknowledged`, `resolved`, `silenced`.
    pub what: String,
    /// The person.
    pub by: String,
}

/// Cuts `s` to at most `max` characters, ending with `…` when cut. Never
/// splits a character or an `&...;` escape.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut cut: String = s.chars().take(max - 1).collect();
    // An escape cut in half would show as garbage: drop the partial one.
    if let Some(amp) = cut.rfind('&') {
        if !cut[amp..].contains(';') {
            cut.truncate(amp);
        }
    }
    cut.push('…');
    cut
}

/// Redacted, escaped for `mrkdwn`. A backtick becomes a look-alike so a value
/// cannot close the code span it is shown in and start markup of its own.
pub fn mrkdwn(s: &str) -> String {
    redact::redact_all(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('`', "\u{2C8}")
}

/// Redacted, on one line: for `plain_text` (no escaping needed there).
pub fn plain(s: &str) -> String {
    redact::redact_all(s).replace(['\n', '\r', '\t'], " ")
}

fn plain_text(s: &str, max: usize) -> Value {
    let t = truncate(&plain(s), max);
    json!({"type": "plain_text", "text": if t.trim().is_empty() { "-".to_string() } else { t }, "emoji": true})
}

fn mrkdwn_text(s: &str, max: usize) -> Value {
    let t = truncate(s, max);
    // `verbatim`: a bare URL, channel name or @mention in the text stays text.
    json!({"type": "mrkdwn", "text": if t.trim().is_empty() { "-".to_string() } else { t }, "verbatim": true})
}

fn section(text_mrkdwn: &str) -> Value {
    json!({"type": "section", "text": mrkdwn_text(text_mrkdwn, MAX_SECTION)})
}

/// `provider=stripe, region=us-west-2`, or `all traffic`.
pub fn dims_text(dims: &BTreeMap<String, String>) -> String {
    if dims.is_empty() {
        return "all traffic".into();
    }
    dims.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Status bar colour: severity while firing, amber once acknowledged, green when resolved.
pub fn colour(inc: &Incident) -> &'static str {
    match (inc.status, inc.severity) {
        (Status::Resolved, _) => "#2EB67D",
        (Status::Acknowledged, _) => "#ECB22E",
        (Status::Open, Severity::Critical) => "#E01E5A",
        (Status::Open, Severity::Warning) => "#F2952F",
        (Status::Open, Severity::Info) => "#36C5F0",
    }
}

fn emoji(inc: &Incident) -> &'static str {
    match (inc.status, inc.severity) {
        (Status::Resolved, _) => ":white_check_mark:",
        (Status::Acknowledged, _) => ":eyes:",
        (Status::Open, Severity::Critical) => ":red_circle:",
        (Status::Open, Severity::Warning) => ":large_orange_circle:",
        (Status::Open, Severity::Info) => ":large_blue_circle:",
    }
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.2}%", x * 100.0)
    } else {
        "n/a".into()
    }
}

/// A cause's window evidence: "now" while the incident is open; once
/// resolved it is the last window's, never a stale "now".
fn rate_text(c: &RootCause, open: bool) -> String {
    let when = if open { "now" } else { "in the last window" };
    match c.expected_events {
        Some(exp) => format!("{} events {when} vs {exp:.0} expected", c.events),
        None => format!(
            "{} {when} vs {} baseline",
            pct(c.failure_rate),
            pct(c.baseline_rate)
        ),
    }
}

fn volume_text(c: &RootCause) -> String {
    match c.expected_events {
        Some(_) => format!("{} events in the window", c.events),
        None => format!(
            "{} failed of {} attempts ({:.0} expected failures)",
            c.failures, c.events, c.expected_failures
        ),
    }
}

/// The failure-rate field from the episode: now (while open) and peak, or
/// for volume rules the share of normal. `None` without episode numbers.
fn episode_rate_text(inc: &Incident) -> Option<String> {
    let ep = &inc.episode;
    let peak = ep.peak.as_ref()?;
    let open = inc.status != Status::Resolved;
    let at = peak.window.end.format("%H:%M");
    Some(match (peak.failure_rate, peak.share) {
        (Some(p), _) => {
            let base = pct(peak.baseline_rate.unwrap_or(0.0));
            match ep
                .current
                .as_ref()
                .and_then(|c| c.failure_rate)
                .filter(|_| open)
            {
                Some(now) => format!(
                    "{} now, peak {} at {at} (baseline {base})",
                    pct(now),
                    pct(p)
                ),
                None => format!("peak {} at {at} (baseline {base})", pct(p)),
            }
        }
        (None, Some(share)) => match ep.current.as_ref().and_then(|c| c.share).filter(|_| open) {
            Some(now) => format!("{} of normal now, lowest {} at {at}", pct(now), pct(share)),
            None => format!("lowest {} of normal at {at}", pct(share)),
        },
        _ => return None,
    })
}

/// The impact field from the episode: failures beyond normal (or events
/// missing) since it began. `None` without episode numbers.
fn episode_impact_text(inc: &Incident) -> Option<String> {
    let imp = inc.episode.impact.as_ref()?;
    Some(
        match (imp.failures, imp.excess_failures, imp.missing_events) {
            (Some(f), Some(x), _) => format!(
                "{x:.0} failures beyond normal ({f} failed of {} attempts)",
                imp.events
            ),
            (_, _, Some(m)) => format!("{m:.0} events missing ({} seen)", imp.events),
            _ => return None,
        },
    )
}

/// One line per candidate: dims, numbers, score.
fn candidate_line(i: usize, c: &RootCause, open: bool) -> String {
    format!(
        "{}. `{}`: {}; {}; score {:.2}",
        i + 1,
        mrkdwn(&dims_text(&c.dims)),
        rate_text(c, open),
        volume_text(c),
        c.score
    )
}

/// The status line: `Open`, `Acknowledged by @x`, `Resolved after 12m`.
pub fn status_text(inc: &Incident, acted: Option<&Acted>) -> String {
    let by = |what: &str| {
        acted
            .filter(|a| a.what == what)
            .map(|a| format!(" by {}", mrkdwn(&a.by)))
            .unwrap_or_default()
    };
    match inc.status {
        Status::Open => "Open".into(),
        Status::Acknowledged => format!("Acknowledged{}", by("acknowledged")),
        Status::Resolved => format!("Resolved{} after {}", by("resolved"), duration_text(inc)),
    }
}

/// How long the incident lasted (event time), or has lasted so far: from
/// when its episode began (as its summary counts), else from the opening.
pub fn duration_text(inc: &Incident) -> String {
    let end = inc.resolved_at.unwrap_or(inc.updated_at);
    let start = inc.episode.began_at.unwrap_or(inc.opened_at);
    let secs = (end - start).num_seconds().max(0);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) if s == 0 => format!("{m}m"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m"),
    }
}

/// The incident's first message, in its current state: header, summary,
/// fields, candidates, link buttons, action buttons (while not resolved) and a
/// status bar in the state's colour.
pub fn incident_message(inc: &Incident, acted: Option<&Acted>) -> Message {
    let sev = inc.severity.as_str().to_uppercase();
    let header = format!("{} [{sev}] {}", emoji(inc), inc.title);
    let mut blocks = vec![json!({"type": "header", "text": plain_text(&header, MAX_HEADER)})];

    let summary = if inc.summary.trim().is_empty() {
        "_No summary yet._".to_string()
    } else {
        mrkdwn(&inc.summary)
    };
    blocks.push(section(&summary));

    let cause = inc.root_causes.first();
    let field = |name: &str, value: String| mrkdwn_text(&format!("*{name}*\n{value}"), MAX_FIELD);
    let fields: Vec<Value> = [
        field("Rule", mrkdwn(&inc.rule)),
        field(
            "Root cause",
            cause
                .map(|c| mrkdwn(&dims_text(&c.dims)))
                .unwrap_or_else(|| "unknown".into()),
        ),
        field(
            "Failure rate",
            episode_rate_text(inc)
                .or_else(|| cause.map(|c| rate_text(c, inc.status != Status::Resolved)))
                .unwrap_or_else(|| "n/a".into()),
        ),
        field(
            "Impact",
            episode_impact_text(inc)
                .or_else(|| cause.map(volume_text))
                .unwrap_or_else(|| "n/a".into()),
        ),
        field(
            "Started",
            inc.episode
                .began_at
                .unwrap_or(inc.opened_at)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string(),
        ),
        field("Status", status_text(inc, acted)),
    ]
    .into_iter()
    .take(MAX_FIELDS)
    .collect();
    blocks.push(json!({"type": "section", "fields": fields}));

    if !inc.root_causes.is_empty() {
        let mut text = String::from("*Root-cause candidates*\n");
        let open = inc.status != Status::Resolved;
        for (i, c) in inc.root_causes.iter().take(MAX_CANDIDATES).enumerate() {
            text.push_str(&candidate_line(i, c, open));
            text.push('\n');
        }
        blocks.push(section(text.trim_end()));
    }

    let page = inc.episode.url.as_ref().map(|url| crate::incident::Link {
        title: "Incident page".into(),
        url: url.clone(),
    });
    let links: Vec<Value> = page
        .iter()
        .chain(inc.links.iter())
        .filter(|l| l.url.starts_with("https://") || l.url.starts_with("http://"))
        .filter(|l| l.url.chars().count() <= MAX_BUTTON_URL)
        .take(MAX_LINKS.min(MAX_ACTIONS))
        .enumerate()
        .map(|(i, l)| {
            json!({
                "type": "button",
                "action_id": format!("faultline_link_{i}"),
                "text": plain_text(&l.title, MAX_BUTTON_TEXT),
                "url": redact::redact_all(&l.url),
            })
        })
        .collect();
    if !links.is_empty() {
        blocks.push(json!({"type": "actions", "block_id": "faultline_links", "elements": links}));
    }

    if inc.status != Status::Resolved {
        let mut buttons = Vec::new();
        if inc.status == Status::Open {
            buttons.push(json!({
                "type": "button", "action_id": ACTION_ACK, "style": "primary",
                "text": plain_text("Acknowledge", MAX_BUTTON_TEXT), "value": inc.id,
            }));
        }
        buttons.push(json!({
            "type": "button", "action_id": ACTION_RESOLVE, "style": "danger",
            "text": plain_text("Resolve", MAX_BUTTON_TEXT), "value": inc.id,
        }));
        buttons.push(json!({
            "type": "button", "action_id": ACTION_SILENCE,
            "text": plain_text("Silence 1h", MAX_BUTTON_TEXT), "value": inc.id,
        }));
        blocks
            .push(json!({"type": "actions", "block_id": "faultline_actions", "elements": buttons}));
    }

    blocks.push(json!({"type": "context", "elements": [mrkdwn_text(
        &format!("faultline · `{}` · summary: {}", mrkdwn(&inc.id), match inc.summary_source {
            crate::incident::SummarySource::Llm => "LLM",
            crate::incident::SummarySource::Template => "template",
        }),
        MAX_SECTION,
    )]}));
    blocks.truncate(MAX_BLOCKS);

    let status = status_text(inc, acted);
    let attachments = vec![json!({
        "color": colour(inc),
        "fallback": truncate(&status, MAX_TEXT),
        "blocks": [{"type": "context", "elements": [mrkdwn_text(&format!("*Status:* {status}"), MAX_SECTION)]}],
    })];
    Message {
        // `text` is read as mrkdwn (mentions would fire): escaped, one line.
        text: truncate(&mrkdwn(&plain(&format!("[{sev}] {}", inc.title))), MAX_TEXT),
        blocks,
        attachments,
    }
}

/// A thread reply: one section of `mrkdwn` (already escaped).
pub fn reply(text_mrkdwn: &str) -> Message {
    let text = truncate(text_mrkdwn, MAX_SECTION);
    Message {
        text: text.clone(),
        blocks: vec![section(&text)],
        attachments: Vec::new(),
    }
}

/// The reply announcing a person's action.
pub fn acted_reply(inc: &Incident, what: &str, by: &str) -> Message {
    let by = mrkdwn(by);
    match what {
        "acknowledged" => reply(&format!(":eyes: Acknowledged by {by}.")),
        "resolved" => reply(&format!(
            ":white_check_mark: Resolved by {by} after {}.",
            duration_text(inc)
        )),
        "silenced" => reply(&format!(
            ":no_bell: Silenced for 1h by {by}: incidents matching `{}` are not notified.",
            mrkdwn(&dims_text(
                &inc.root_causes
                    .first()
                    .map(|c| c.dims.clone())
                    .unwrap_or_default()
            ))
        )),
        other => reply(&format!("{} by {by}.", mrkdwn(other))),
    }
}

/// The reply when the engine resolves the incident.
pub fn resolved_reply(inc: &Incident) -> Message {
    let told = match (episode_rate_text(inc), episode_impact_text(inc)) {
        (Some(rate), Some(impact)) => format!(
            " It {}; {}.",
            rate.replacen("peak", "peaked at", 1)
                .replacen("lowest", "fell to", 1),
            impact
        ),
        _ => String::new(),
    };
    reply(&format!(
        ":white_check_mark: Resolved after {}: back to its baseline.{told}",
        duration_text(inc)
    ))
}

/// The reply when the episode's peak grew materially since `told`.
pub fn peak_reply(inc: &Incident, told: f64) -> Message {
    let now = episode_rate_text(inc).unwrap_or_default();
    reply(&format!(
        ":chart_with_upwards_trend: Worse: peak up from {} to {}.",
        pct(told),
        now.split_once("peak ").map_or(now.as_str(), |(_, p)| p)
    ))
}

/// The reply when a resolved incident's cause fails again (within its
/// rule's `reopen_within`): the same thread, not a new incident.
pub fn reopened_reply(inc: &Incident) -> Message {
    let at = inc.updated_at.format("%H:%M:%S UTC");
    reply(&format!(
        ":repeat: Reopened at {at}: failing again soon after it resolved. Same incident, same thread."
    ))
}

/// The reply when the severity changed.
pub fn severity_reply(from: Severity, to: Severity) -> Message {
    reply(&format!(
        ":rotating_light: Severity changed: {} → *{}*.",
        from.as_str(),
        to.as_str()
    ))
}

/// The reply listing new root-cause candidates.
pub fn candidates_reply(new: &[&RootCause]) -> Message {
    let mut text = String::from(":mag: New root-cause candidates:\n");
    for (i, c) in new.iter().take(MAX_CANDIDATES).enumerate() {
        text.push_str(&candidate_line(i, c, true));
        text.push('\n');
    }
    reply(text.trim_end())
}

/// The reply carrying a late (LLM) summary.
pub fn summary_reply(inc: &Incident) -> Message {
    reply(&format!(
        ":memo: Updated summary:\n{}",
        mrkdwn(&inc.summary)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::fixtures::incident;

    #[test]
    fn truncate_cuts_on_chars_with_an_ellipsis() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééééé", 4), "ééé…");
        assert_eq!(truncate("a &amp; b", 5), "a …");
        assert_eq!(truncate("🦀🦀🦀", 2).chars().count(), 2);
    }

    #[test]
    fn message_respects_limits_and_redacts() {
        let mut inc = incident("inc_1", 1_772_410_841_000);
        inc.title = format!("card 4111 1111 1111 1111 {}", "x".repeat(400));
        inc.summary = format!("<!channel> & {}", "y".repeat(5000));
        let m = incident_message(&inc, None);
        let s = serde_json::to_string(&m.blocks).unwrap();
        assert!(!s.contains("4111 1111"), "{s}");
        assert!(s.contains(redact::PAN_MASK));
        assert!(!s.contains("<!channel>"), "mentions must be escaped");
        let header = m.blocks[0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), MAX_HEADER);
        assert!(header.ends_with('…'));
        let summary = m.blocks[1]["text"]["text"].as_str().unwrap();
        assert_eq!(summary.chars().count(), MAX_SECTION);
        assert!(m.blocks.len() <= MAX_BLOCKS);
        // Action buttons while open, none once resolved.
        assert!(s.contains(ACTION_ACK) && s.contains(ACTION_SILENCE));
        inc.status = Status::Resolved;
        let m = incident_message(&inc, None);
        let s = serde_json::to_string(&m.blocks).unwrap();
        assert!(
            !s.contains(ACTION_ACK) && !s.contains(ACTION_RESOLVE),
            "{s}"
        );
        assert_eq!(m.attachments[0]["color"], "#2EB67D");
    }
}
