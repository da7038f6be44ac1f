//! The demo tells the story it promises: each page stamped, by the route the README describes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[tokio::test]
async fn the_demo_edits_each_page_by_the_promised_route() {
    let story = understudy_demo::run().await.unwrap();
    let lines: Vec<&str> = story.lines().collect();
    let step = |n: &str| *lines.iter().find(|l| l.starts_with(n)).unwrap();
    assert!(step("2.").ends_with("by the app user, stamped."), "{story}");
    assert!(
        step("3.").contains("by the app acting as Alice, stamped."),
        "{story}"
    );
    assert!(
        step("4.").contains("(done)") && step("4.").ends_with("by the app user, stamped."),
        "{story}"
    );
    assert!(
        story.contains("edited    as Alice      impersonate"),
        "{story}"
    );
    assert!(story.contains("grant"), "{story}");
}

#[tokio::test]
async fn the_forge_demo_edits_each_page_by_the_promised_route() {
    let story = understudy_demo::run_forge().await.unwrap();
    let lines: Vec<&str> = story.lines().collect();
    let step = |n: &str| *lines.iter().find(|l| l.starts_with(n)).unwrap();
    assert!(step("1.").contains("(answer 204)"), "{story}");
    assert!(step("2.").ends_with("by the app user, stamped."), "{story}");
    assert!(
        step("3.").contains("1 exchange")
            && step("3.").ends_with("by the app acting as Alice, stamped."),
        "{story}"
    );
    assert!(
        step("4.").contains("(done)") && step("4.").ends_with("by the app user, stamped."),
        "{story}"
    );
    assert!(step("5.").contains(": 200, \"edited"), "{story}");
    assert!(step("6.").ends_with(": 401."), "{story}");
    assert!(
        story.contains("after adding it to the page's restrictions"),
        "{story}"
    );
}
