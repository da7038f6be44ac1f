//! Atlassian's personal data reporting API as the app (docs/protocol.md §19): the HTTP side of
//! the core's [`AccountReporting`] port.
//!
//! `POST <ATLASSIAN_REPORT_ACCOUNTS_URL>` (default `https://api.atlassian.com/app/report-accounts/`)
//! with `{"accounts": [{"accountId", "updatedAt"}]}`. A Forge tenant reports with its
//! installation's system token; a Connect tenant with a Connect JWT of the app
//! ([`connect_report_token`]: the claims Atlassian expects there are not documented). 429 and 5xx
//! go through the shared retry executor (waiting as told within the deadline); what is still
//! refused after it is the caller's to leave for the next run.

use async_trait::async_trait;
use connect_auth::{ExposeSecret, mint_app_token};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use understudy_core::{
    AccountReport, AccountReporting, AccountStatus, Door, ReportAnswer, ReportError,
};
use understudy_domain::{AccountId, Tenant};
use url::Url;

use crate::client::ConfluenceClient;
use crate::retry::{Attempt, Retried, Retrier, told_wait};

/// The most of an answer that is read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    accounts: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(rename = "accountId")]
    account_id: String,
    status: String,
}

/// The JWT a Connect app reports its tenant's accounts with: an app token (`iss` = the app key,
/// `aud` = the clientKey) whose qsh is computed for the request relative to the reporting API's
/// origin, signed with the tenant's shared secret. Atlassian does not document the claims it
/// checks on this endpoint; this is the token Connect apps use "in the context of the app", and
/// the one place to change if it expects another (docs/protocol.md §19).
pub fn connect_report_token(tenant: &Tenant, url: &Url, now: i64) -> Result<String, ReportError> {
    let mut origin = url.clone();
    origin.set_path("/");
    origin.set_query(None);
    mint_app_token(
        &tenant.app_key,
        tenant.client_key.as_str(),
        &tenant.shared_secret,
        "POST",
        url,
        &origin,
        now,
    )
    .map_err(|_| ReportError::NoCredentials {
        reason: "the report token could not be signed".into(),
    })
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

impl ConfluenceClient {
    fn report_authorization(&self, door: Door<'_>, url: &Url) -> Result<HeaderValue, ReportError> {
        let now = self.now_unix();
        let text = match door {
            Door::Connect(tenant) => format!("JWT {}", connect_report_token(tenant, url, now)?),
            Door::Forge(forge) => {
                let system = &forge.installation.system_token;
                if !system.is_fresh(now) {
                    return Err(ReportError::NoCredentials {
                        reason: "the Forge system token has expired".into(),
                    });
                }
                format!("Bearer {}", system.token.expose_secret())
            }
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| ReportError::NoCredentials {
            reason: "the credential is not header text".into(),
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

#[async_trait]
impl AccountReporting for ConfluenceClient {
    async fn report_accounts(
        &self,
        door: Door<'_>,
        accounts: &[AccountReport],
    ) -> Result<ReportAnswer, ReportError> {
        let url = match &self.config().report_accounts_url {
            Some(url) => url.clone(),
            None => Url::parse(crate::config::REPORT_ACCOUNTS_URL).map_err(|_| {
                ReportError::NoCredentials {
                    reason: "the reporting API URL is not a URL".into(),
                }
            })?,
        };
        let body = json!({"accounts": accounts.iter().map(|a| json!({
            "accountId": a.account.as_str(),
            "updatedAt": rfc3339(a.updated_at),
        })).collect::<Vec<_>>()});
        let retried = Retried {
            client_key: door.tenant_key().as_str(),
            method: "POST",
            path: url.path(),
        };
        let (url, body) = (&url, &body);
        Retrier::new(self.config().retry, self.pause())
            .run(retried, |limits| async move {
                // A fresh token per attempt: a Connect JWT lives minutes, a retry may come later.
                let authorization = match self.report_authorization(door, url) {
                    Ok(value) => value,
                    Err(error) => return Attempt::Done(Err(error)),
                };
                let request = self
                    .http()
                    .post(url.clone())
                    .header(AUTHORIZATION, authorization)
                    .header(ACCEPT, "application/json")
                    .json(body);
                let network = |reason| ReportError::Unavailable { reason };
                match limits.send(request, network).await {
                    Ok(response) => judge(response, self.now_unix()).await,
                    Err(retry) => retry,
                }
            })
            .await
    }
}

async fn judge(response: reqwest::Response, now: i64) -> Attempt<ReportAnswer, ReportError> {
    let status = response.status();
    let cycle_period = response
        .headers()
        .get("cycle-period")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|s| *s > 0);
    let told = told_wait(response.headers(), now);
    match status {
        StatusCode::NO_CONTENT => Attempt::Done(Ok(ReportAnswer {
            statuses: Vec::new(),
            cycle_period,
        })),
        StatusCode::OK => {
            let bytes = match response.bytes().await {
                Ok(bytes) if bytes.len() <= MAX_ANSWER_BYTES => bytes,
                _ => {
                    return Attempt::Done(Err(ReportError::Unavailable {
                        reason: "the answer was cut off or too large".into(),
                    }));
                }
            };
            let Ok(answer) = serde_json::from_slice::<Answer>(&bytes) else {
                return Attempt::Done(Err(ReportError::Unavailable {
                    reason: "the answer is not the documented JSON".into(),
                }));
            };
            let statuses = answer
                .accounts
                .into_iter()
                .filter_map(|named| {
                    let account = AccountId::parse(named.account_id).ok()?;
                    let status = match named.status.as_str() {
                        "closed" => AccountStatus::Closed,
                        "updated" => AccountStatus::Updated,
                        _ => return None,
                    };
                    Some((account, status))
                })
                .collect();
            Attempt::Done(Ok(ReportAnswer {
                statuses,
                cycle_period,
            }))
        }
        StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
            error: ReportError::RateLimited { retry_after: told },
            told,
        },
        s if s.is_server_error() => Attempt::Retry {
            error: ReportError::Unavailable {
                reason: format!("status {}", s.as_u16()),
            },
            told,
        },
        s => Attempt::Done(Err(ReportError::Refused { status: s.as_u16() })),
    }
}
