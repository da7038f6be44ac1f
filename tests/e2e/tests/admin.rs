//! The site admins' API, end to end, through both front doors: only a site admin (by
//! Confluence's word) gets in; the tenant's rules are checked on save and run from the next
//! event; a blocked page is listed with what to do and retried; the audit trail is filtered and
//! downloaded as CSV; the queue's health is shown.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use e2e_tests::{REVIEWED, World, rules};
use serde_json::{Value, json};

const ADMIN_STAMP: &str = "<p>Checked by the site admin's rule</p>";

async fn call(
    w: &World,
    user: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value, String) {
    let client = reqwest::Client::new();
    let url = format!("{}/api/admin/{path}", w.app.base_url());
    let mut request = match method {
        "GET" => client.get(url),
        "PUT" => client.put(url),
        _ => client.post(url),
    }
    .header("authorization", format!("JWT {}", w.context_token(user)));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json, text)
}

fn admin_rules(policy: &str) -> Value {
    json!({"restricted_pages": policy,
           "rules": [{"name": "admin-stamp", "events": ["page_updated"], "spaces": ["DEMO"],
                      "edit": [{"append": ADMIN_STAMP}]}]})
}

#[tokio::test]
async fn only_site_admins_get_in_and_the_check_is_confluences() {
    let w = World::new(&rules("impersonate")).await;
    w.sim.set_site_admin(&w.demo.alice, true);
    for path in ["settings", "blocked", "audit", "queue"] {
        let (status, body, _) = call(&w, &w.demo.bob, "GET", path, None).await;
        assert_eq!(status, 403, "{path}: {body}");
        let (status, body, _) = call(&w, &w.demo.alice, "GET", path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _, _) = call(
        &w,
        &w.demo.bob,
        "PUT",
        "settings",
        Some(&json!({"document": null})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = call(
        &w,
        &w.demo.bob,
        "POST",
        "retry",
        Some(&json!({"pageId": w.demo.open_page})),
    )
    .await;
    assert_eq!(status, 403);
    // A request-bound token (not a context token) is refused on the API.
    let response = reqwest::Client::new()
        .get(format!("{}/api/admin/settings", w.app.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn rules_are_checked_on_save_and_run_from_the_next_event() {
    let w = World::new(&rules("impersonate")).await;
    let alice = w.demo.alice.clone();
    w.sim.set_site_admin(&alice, true);
    let (_, settings, _) = call(&w, &alice, "GET", "settings", None).await;
    assert_eq!(settings["effective"], "default");
    assert_eq!(settings["tenant"], Value::Null);
    assert_eq!(settings["default"]["rules"][0]["name"], "review-stamp");

    let bad = json!({"document": {"rules": [
        {"name": "fine", "events": ["page_updated"], "edit": [{"append": "<p>a</p>"}]},
        {"name": "broken", "events": ["page_updated"], "edit": [], "colour": "red"}]}});
    let (status, body, _) = call(&w, &alice, "PUT", "settings", Some(&bad)).await;
    assert_eq!(status, 400);
    let said = body["error"].as_str().unwrap();
    assert!(
        said.contains("rule 2 (`broken`)") && said.contains("colour"),
        "{said}"
    );

    let (status, body, _) = call(
        &w,
        &alice,
        "PUT",
        "settings",
        Some(&json!({"document": admin_rules("impersonate")})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page = w.demo.open_page.clone();
    w.sim
        .edit_page_as(&w.demo.bob, &page, "<p>Bob</p>")
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(w.count_in_page(&page, ADMIN_STAMP), 1);
    assert_eq!(
        w.count_in_page(&page, REVIEWED),
        0,
        "the deployment's rule no longer applies"
    );

    // Emptied: back to the deployment's.
    let (status, body, _) = call(
        &w,
        &alice,
        "PUT",
        "settings",
        Some(&json!({"document": {}})),
    )
    .await;
    assert_eq!((status, body["effective"].as_str()), (200, Some("default")));
    w.sim
        .edit_page_as(&w.demo.bob, &page, "<p>Bob again</p>")
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(w.count_in_page(&page, REVIEWED), 1);
}

#[tokio::test]
async fn a_blocked_page_is_listed_with_what_to_do_and_retried() {
    let w = World::new(&rules("skip")).await;
    let alice = w.demo.alice.clone();
    w.sim.set_site_admin(&alice, true);
    let page = w.demo.edit_restricted_page.clone();
    w.sim
        .edit_page_as(&alice, &page, "<p>Alice</p>")
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(w.count_in_page(&page, REVIEWED), 0);

    let (_, blocked, _) = call(&w, &alice, "GET", "blocked", None).await;
    let pages = blocked["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 1, "{blocked}");
    assert_eq!(pages[0]["pageId"], page.as_str());
    assert_eq!(pages[0]["outcome"], "blocked");
    let reason = pages[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("policy is skip") && reason.contains("an admin can"),
        "{reason}"
    );
    // The parked job names Alice, who triggered it: she is listed for personal data reporting.
    let listed = understudy_domain::AccountRegistry::list_accounts(
        &**w.app.store(),
        &w.client_key(),
        None,
        10,
    )
    .await
    .unwrap();
    assert!(
        listed.accounts.iter().any(|a| a.account.as_str() == alice),
        "{listed:?}"
    );

    // The admin changes the policy, then retries the page: the parked job runs again.
    let mut document: Value = serde_json::from_str(&rules("impersonate")).unwrap();
    document["restricted_pages"] = json!("impersonate");
    let (status, _, _) = call(
        &w,
        &alice,
        "PUT",
        "settings",
        Some(&json!({"document": document})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body, _) = call(&w, &alice, "POST", "retry", Some(&json!({"pageId": page}))).await;
    assert_eq!(status, 202, "{body}");
    w.settle().await;
    assert_eq!(w.count_in_page(&page, REVIEWED), 1, "edited on retry");
    let (_, blocked, _) = call(&w, &alice, "GET", "blocked", None).await;
    assert!(blocked["pages"].as_array().unwrap().is_empty(), "{blocked}");
    // Nothing parked is nothing to retry.
    let (status, _, _) = call(&w, &alice, "POST", "retry", Some(&json!({"pageId": page}))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_audit_trail_is_filtered_paged_and_downloaded_as_csv() {
    let w = World::new(&rules("skip")).await;
    let alice = w.demo.alice.clone();
    w.sim.set_site_admin(&alice, true);
    let open = w.demo.open_page.clone();
    let restricted = w.demo.edit_restricted_page.clone();
    w.sim
        .edit_page_as(&w.demo.bob, &open, "<p>Bob</p>")
        .await
        .unwrap();
    w.sim
        .edit_page_as(&alice, &restricted, "<p>Alice</p>")
        .await
        .unwrap();
    w.settle().await;

    let (_, all, _) = call(&w, &alice, "GET", "audit", None).await;
    let records = all["records"].as_array().unwrap();
    assert!(records.len() >= 2, "{all}");
    let (_, blocked, _) = call(&w, &alice, "GET", "audit?outcome=blocked", None).await;
    let blocked = blocked["records"].as_array().unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0]["page_id"], restricted.as_str());
    let (_, by_page, _) = call(
        &w,
        &alice,
        "GET",
        &format!("audit?page={open}&actor=app"),
        None,
    )
    .await;
    assert!(
        by_page["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["page_id"] == open.as_str()),
        "{by_page}"
    );
    let (status, _, _) = call(&w, &alice, "GET", "audit?outcome=sideways", None).await;
    assert_eq!(status, 400);

    let (status, _, csv) = call(&w, &alice, "GET", "audit?format=csv", None).await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert_eq!(
        lines[0],
        "at,page_id,outcome,acted_as,strategy,version_before,version_after,reason,job_id"
    );
    assert_eq!(lines.len() - 1, records.len());
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&restricted) && l.contains(",blocked,"))
    );

    let (_, queue, _) = call(&w, &alice, "GET", "queue", None).await;
    assert_eq!(queue["waiting"], 0);
    assert!(queue["deadLetters"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn the_forge_door_serves_the_same_admin_api_to_admins_only() {
    let w = World::new(&rules("impersonate")).await;
    w.sim
        .forge_install_linked("understudy", w.app.base_url())
        .await
        .unwrap();
    w.sim.set_site_admin(&w.demo.alice, true);
    let (status, body) = w
        .sim
        .forge_invoke_remote(&w.demo.alice, "GET", "/api/admin/settings", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["effective"], "default");
    let (status, _) = w
        .sim
        .forge_invoke_remote(&w.demo.bob, "GET", "/api/admin/settings", None)
        .await
        .unwrap();
    assert_eq!(status, 403);
    // Saved through Forge, seen through Connect: one tenant.
    let (status, body) = w
        .sim
        .forge_invoke_remote(
            &w.demo.alice,
            "PUT",
            "/api/admin/settings",
            Some(&json!({"document": admin_rules("grant")})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, settings, _) = call(&w, &w.demo.alice, "GET", "settings", None).await;
    assert_eq!(settings["effective"], "tenant");
    assert_eq!(settings["policy"], "grant");
}
