//! "What to check next": one short, specific step from the root cause's
//! shape (which dimensions it fixes), its error codes and the rule, written
//! here, not by a model, so it is the same whoever writes the summary.

use super::Facts;
use crate::redact;
use crate::rules::Detector;

/// The next step for the incident of `f`, or none without a root cause.
pub fn next_step(f: &Facts) -> Option<String> {
    let c = f.root_causes.first()?;
    let v = |k: &str| c.dims.get(k).map(|v| redact::redact_all(v).into_owned());
    let code = f.episode.error_codes.first().map(|c| c.code.clone());
    let step = if f.detector == Detector::VolumeDrop {
        let what = match (v("provider"), v("region"), v("merchant_id")) {
            (_, _, Some(m)) => format!("merchant {m}'s integration"),
            (Some(p), Some(r), _) => format!("the {p} connection in {r}"),
            (Some(p), None, _) => format!("the {p} connection"),
            (None, Some(r), _) => format!("traffic routing into {r}"),
            (None, None, _) => "the upstream producers".into(),
        };
        format!(
            "Check whether {} events still reach faultline: {what}, then ingest (NATS, HTTP) for drops.",
            f.kind
        )
    } else if let Some(bin) = v("bin").or_else(|| v("bin6")).or_else(|| v("bin4")) {
        let scheme = v("card_brand").unwrap_or_else(|| "card scheme".into());
        format!(
            "Check the status of the issuer behind BIN {bin} and the {scheme} status page; \
             consider routing its cards to another provider or asking for a retry later."
        )
    } else if let Some(m) = v("merchant_id") {
        if f.kind == "webhook" {
            format!(
                "Check merchant {m}'s webhook endpoint: its last responses (status, latency, TLS), \
                 then contact the merchant."
            )
        } else {
            format!("Check merchant {m}'s recent changes (deploys, credentials, request format).")
        }
    } else {
        match (v("provider"), v("region")) {
            (Some(p), Some(r)) => format!(
                "Check {p}'s status page for {r} and whether {r} traffic can fail over to another provider."
            ),
            (Some(p), None) => format!(
                "Check {p}'s status page and its credentials; fail over to another provider if it is down."
            ),
            (None, Some(r)) => format!(
                "Check region {r} itself (network, DNS, the gateway there): every provider in it fails."
            ),
            (None, None) => match &code {
                Some(code) => format!("Check what returns {code} across all traffic: a shared dependency or a recent deploy."),
                None => "Check shared dependencies and recent deploys: the failures span all traffic.".into(),
            },
        }
    };
    Some(match code.filter(|_| f.detector == Detector::Rate) {
        Some(code) if !c.dims.contains_key("error_code") => {
            format!("{step} Most excess failures are {code}.")
        }
        _ => step,
    })
}
