//! The browser helper itself: a real headless Chromium loads a page from an in-test server, is
//! typed into and clicked; a failing body leaves a screenshot, the HTML and the console.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::response::Html;
use test_support::browser::{Browser, BrowserConfig, Locator, screenshot_dir};

const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>Greeter</title></head>
<body>
  <label>Name <input id="name" type="text"></label>
  <button id="greet" type="button">Greet</button>
  <p id="greeting"></p>
  <script>
    document.getElementById("greet").addEventListener("click", function () {
      var name = document.getElementById("name").value;
      console.log("greeting " + name);
      document.getElementById("greeting").textContent = "Hello, " + name + "!";
    });
  </script>
</body>
</html>"#;

/// Serves [`PAGE`] at `/` on 127.0.0.1; returns its URL.
async fn serve_page() -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/", axum::routing::get(|| async { Html(PAGE) }));
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}/")
}

#[tokio::test]
async fn types_into_an_input_clicks_a_button_and_reads_the_text_back() {
    let url = serve_page().await;
    let started = Instant::now();
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("browser started in {:?}", started.elapsed());

    let greeting = browser
        .run("greeter_types_and_clicks", |client| async move {
            client.goto(&url).await?;
            assert_eq!(client.title().await?, "Greeter");
            client
                .find(Locator::Css("#name"))
                .await?
                .send_keys("Ada")
                .await?;
            client.find(Locator::Css("#greet")).await?.click().await?;
            client.find(Locator::Css("#greeting")).await?.text().await
        })
        .await;
    assert_eq!(greeting, "Hello, Ada!");

    let (width, height) = browser.client().get_window_size().await.unwrap();
    assert_eq!((width, height), (1280, 900));
    let console = browser.console_log().await.unwrap();
    assert!(
        console.iter().any(|line| line.contains("greeting Ada")),
        "{console:?}"
    );
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_failing_body_leaves_a_screenshot_and_the_html_then_fails_the_test() {
    let url = serve_page().await;
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    let name = "browser_helper_self_test_failure";
    for extension in ["png", "html", "console.txt"] {
        let _ = std::fs::remove_file(screenshot_dir().join(format!("{name}.{extension}")));
    }

    let page = url.clone();
    let failure = browser
        .check(name, Duration::from_secs(30), |client| async move {
            client.goto(&page).await?;
            client
                .find(Locator::Css("#name"))
                .await?
                .send_keys("Grace")
                .await?;
            client.find(Locator::Css("#greet")).await?.click().await?;
            client.find(Locator::Css("#no-such-element")).await?;
            Ok::<_, fantoccini::error::CmdError>(())
        })
        .await
        .expect_err("the body fails");

    let screenshot = failure.screenshot.clone().expect("a screenshot");
    assert_eq!(screenshot, screenshot_dir().join(format!("{name}.png")));
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 1000, "a PNG of {} bytes", png.len());
    let html = std::fs::read_to_string(failure.html.as_ref().expect("the html")).unwrap();
    assert!(html.contains("Hello, Grace!"), "{html}");
    let console = std::fs::read_to_string(failure.console.as_ref().expect("the console")).unwrap();
    assert!(console.contains("greeting Grace"), "{console}");
    assert!(failure.capture_errors.is_empty(), "{failure}");
    assert_eq!(failure.url.as_deref(), Some(url.as_str()));
    assert!(failure.message.contains("no-such-element"), "{failure}");
    let shown = failure.to_string();
    assert!(shown.contains(&screenshot.display().to_string()), "{shown}");
}

#[tokio::test]
async fn run_fails_the_test_when_the_body_panics_and_still_saves_the_screenshot() {
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    let name = "browser_helper_self_test_panic";
    let path = screenshot_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);

    let outcome = tokio::spawn(async move {
        browser
            .run(name, |client| async move {
                client
                    .goto("data:text/html,<h1>panicking page</h1>")
                    .await?;
                panic!("the body's own assertion failed");
                #[allow(unreachable_code)]
                Ok::<_, fantoccini::error::CmdError>(())
            })
            .await;
    })
    .await;

    let panic = outcome.expect_err("run fails the test").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("the body's own assertion failed"),
        "{message}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(std::fs::read(&path).unwrap().starts_with(b"\x89PNG"));
}

#[tokio::test]
async fn a_missing_program_is_an_error_that_names_it() {
    let missing = "/nonexistent/chromedriver-for-this-test";
    let error = Browser::start_with(BrowserConfig {
        chromedriver: Some(missing.into()),
        chromium: None,
    })
    .await
    .expect_err("no chromedriver there")
    .to_string();
    assert!(error.contains("chromedriver is missing"), "{error}");
    assert!(error.contains(missing), "{error}");
    assert!(error.contains("chromium-driver"), "{error}");

    let missing = "/nonexistent/chromium-for-this-test";
    let error = Browser::start_with(BrowserConfig {
        chromedriver: None,
        chromium: Some(missing.into()),
    })
    .await
    .expect_err("no chromium there")
    .to_string();
    assert!(error.contains("chromium is missing"), "{error}");
    assert!(error.contains(missing), "{error}");

    // A Chromium that does not start: chromedriver's refusal, and chromedriver is stopped.
    let error = Browser::start_with(BrowserConfig {
        chromedriver: None,
        chromium: Some("/bin/false".into()),
    })
    .await
    .expect_err("/bin/false is no browser")
    .to_string();
    assert!(
        error.contains("no WebDriver session with Chromium (/bin/false)"),
        "{error}"
    );
}
