//! The audit trail as CSV (RFC 4180), safe to open in a spreadsheet.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use understudy_domain::{ActedAs, AuditRecord};
use understudy_web::ApiResponse;

/// The columns, in order.
const HEADER: &str =
    "at,page_id,outcome,acted_as,strategy,version_before,version_after,reason,job_id";

/// `records` as a CSV download.
pub(crate) fn response(records: &[AuditRecord]) -> ApiResponse {
    let mut text = String::with_capacity(records.len().saturating_mul(160).saturating_add(96));
    text.push_str(HEADER);
    text.push_str("\r\n");
    for record in records {
        let acted_as = match &record.acted_as {
            ActedAs::App => "app".to_owned(),
            ActedAs::User(user) => user.as_str().to_owned(),
        };
        let cells = [
            rfc3339_ms(record.at_ms),
            record.page_id.as_str().to_owned(),
            label(&record.outcome),
            acted_as,
            label(&record.strategy),
            record
                .version_before
                .map(|v| v.to_string())
                .unwrap_or_default(),
            record
                .version_after
                .map(|v| v.to_string())
                .unwrap_or_default(),
            record.reason.clone(),
            record.job_id.clone(),
        ];
        let line: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        text.push_str(&line.join(","));
        text.push_str("\r\n");
    }
    let mut response = http::Response::new(Bytes::from(text));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"understudy-audit.csv\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// One cell: quoted when it holds a comma, quote or line break; a text a spreadsheet would run
/// as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) is prefixed with `'`.
fn cell(value: &str) -> String {
    let guarded = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

fn label<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339_ms(at_ms: i64) -> String {
    let seconds = at_ms.div_euclid(1000);
    let millis = at_ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("line\nbreak"), "\"line\nbreak\"");
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_055_279_123), "2026-11-30T16:14:39.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
