//! The admin page: plain HTML, CSS and a little script, no build step. Every value from the server
//! is set with `textContent` (or as a form value), never as HTML. Labels on every control, real
//! buttons (keyboard and focus work as the browser makes them), an `aria-live` status line, and
//! colours from Atlassian's palette with enough contrast.

/// The page, loading Confluence's host script from `connect_js_url`.
pub(crate) fn render(connect_js_url: &str) -> String {
    PAGE.replace(CONNECT_JS_PLACEHOLDER, &html_attribute(connect_js_url))
}

const CONNECT_JS_PLACEHOLDER: &str = "{{connect_js_url}}";

/// A URL made safe inside a double-quoted attribute.
fn html_attribute(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Understudy administration</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<script src="{{connect_js_url}}" data-options="sizeToParent:true"></script>
<style>
body{font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,sans-serif;color:#172B4D;margin:16px;max-width:1100px}
h1{font-size:20px;font-weight:600;margin:0 0 12px}
h2{font-size:16px;font-weight:600;margin:24px 0 8px}
section{border-top:1px solid #DFE1E6;padding-top:4px}
label{display:block;font-weight:600;margin:8px 0 4px}
select,input,textarea{font:inherit;color:#172B4D;border:2px solid #DFE1E6;border-radius:3px;padding:4px 6px;background:#FAFBFC}
textarea{width:100%;box-sizing:border-box;font-family:SFMono-Regular,Menlo,monospace;font-size:12px}
select:focus,input:focus,textarea:focus,button:focus{outline:2px solid #4C9AFF;outline-offset:1px}
button{font:inherit;border:0;border-radius:3px;padding:5px 12px;margin:8px 8px 0 0;background:#F4F5F7;color:#42526E;cursor:pointer}
button.primary{background:#0052CC;color:#FFFFFF}
button:hover{filter:brightness(0.95)}
table{border-collapse:collapse;width:100%;margin-top:8px}
th,td{text-align:left;vertical-align:top;padding:4px 8px;border-bottom:1px solid #DFE1E6}
th{color:#5E6C84;font-weight:600}
pre{background:#F4F5F7;padding:8px;border-radius:3px;overflow:auto;font-size:12px;max-height:180px}
.note{color:#5E6C84}
.error{color:#AE2A19;background:#FFEBE6;padding:6px 8px;border-radius:3px}
.filters{display:flex;gap:12px;flex-wrap:wrap;align-items:flex-end}
.filters label{margin-top:0}
[hidden]{display:none!important}
</style></head><body>
<h1>Understudy administration</h1>
<p id="status" class="note" role="status" aria-live="polite">Loading…</p>
<p id="refusal" class="error" role="alert" hidden></p>
<main id="admin" hidden>
<section aria-labelledby="settings-title">
<h2 id="settings-title">Policy and rules</h2>
<p id="effective" class="note"></p>
<form id="settings-form">
<label for="policy">When a restriction blocks the app</label>
<select id="policy">
<option value="impersonate">Edit as the user who made the change (impersonate)</option>
<option value="grant">Add the app to the page's restrictions as that user (grant)</option>
<option value="skip">Leave the page alone (skip)</option>
</select>
<label for="rules">This site's edit rules (JSON; empty to use the deployment's)</label>
<textarea id="rules" rows="12" spellcheck="false" aria-describedby="settings-error"></textarea>
<p id="settings-error" class="error" role="alert" hidden></p>
<button type="submit" id="save" class="primary">Save</button>
<button type="button" id="reset">Use the deployment's rules</button>
</form>
<label for="default-rules">The deployment's rules</label>
<pre id="default-rules" tabindex="0"></pre>
</section>
<section aria-labelledby="blocked-title">
<h2 id="blocked-title">Blocked pages</h2>
<p class="note">Pages whose last edit was blocked or failed, newest first, with what an admin can do.</p>
<table><thead><tr><th scope="col">Page</th><th scope="col">When</th><th scope="col">Outcome</th><th scope="col">Why, and what to do</th><th scope="col"><span class="note">Action</span></th></tr></thead>
<tbody id="blocked"></tbody></table>
<p id="blocked-empty" class="note" hidden>No page is blocked.</p>
</section>
<section aria-labelledby="queue-title">
<h2 id="queue-title">Queue health</h2>
<p>Jobs waiting (all sites): <strong id="waiting">–</strong></p>
<table><thead><tr><th scope="col">Dead letter: page</th><th scope="col">When</th><th scope="col">Reason</th><th scope="col"><span class="note">Action</span></th></tr></thead>
<tbody id="dead-letters"></tbody></table>
<p id="dead-empty" class="note" hidden>No dead letters.</p>
</section>
<section aria-labelledby="audit-title">
<h2 id="audit-title">Audit trail</h2>
<form id="audit-form" class="filters">
<div><label for="filter-page">Page id</label><input id="filter-page" inputmode="numeric" size="14"></div>
<div><label for="filter-outcome">Outcome</label><select id="filter-outcome"><option value="">Any</option><option value="edited">edited</option><option value="unchanged">unchanged</option><option value="blocked">blocked</option><option value="failed">failed</option><option value="refused">refused</option><option value="skipped">skipped</option></select></div>
<div><label for="filter-actor">Acted as (app or an accountId)</label><input id="filter-actor" size="24"></div>
<div><button type="submit" id="apply-filters">Filter</button><button type="button" id="download-csv">Download CSV</button></div>
</form>
<table><thead><tr><th scope="col">When</th><th scope="col">Page</th><th scope="col">Outcome</th><th scope="col">Acted as</th><th scope="col">How</th><th scope="col">Reason</th></tr></thead>
<tbody id="audit"></tbody></table>
<button type="button" id="older" hidden>Older records</button>
</section>
</main>
<script>
'use strict';
const $ = id => document.getElementById(id);
function say(text) { $('status').textContent = text; }
function api(path, init) {
  return AP.context.getToken().then(token => fetch('../api/admin/' + path, Object.assign({}, init, {
    headers: {'Authorization': 'JWT ' + token, 'Content-Type': 'application/json'}})));
}
function json(response) {
  return response.json().catch(() => ({})).then(body => ({ok: response.ok, status: response.status, body}));
}
function refuse(answer) {
  $('admin').hidden = true;
  $('refusal').hidden = false;
  $('refusal').textContent = answer.status === 403
    ? 'Only site admins may use this page. ' + (answer.body.error || '')
    : 'The app could not be reached: ' + (answer.body.error || answer.status);
  say('');
}
function cell(row, text) { const td = document.createElement('td'); td.textContent = text; row.appendChild(td); return td; }
function when(ms) { return new Date(ms).toLocaleString(); }
function retryButton(row, pageId) {
  const td = document.createElement('td');
  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = 'Retry now';
  button.setAttribute('aria-label', 'Retry page ' + pageId);
  button.addEventListener('click', () => {
    button.disabled = true;
    api('retry', {method: 'POST', body: JSON.stringify({pageId})}).then(json).then(answer => {
      if (answer.ok) { say('Page ' + pageId + ' is queued again.'); loadBlocked(); loadQueue(); }
      else { button.disabled = false; say('Retry refused: ' + (answer.body.error || answer.status)); }
    });
  });
  td.appendChild(button);
  row.appendChild(td);
}
let settings = null;
function loadSettings() {
  return api('settings').then(json).then(answer => {
    if (!answer.ok) { refuse(answer); return false; }
    settings = answer.body;
    $('admin').hidden = false;
    $('policy').value = settings.policy || 'impersonate';
    const shown = settings.tenant || settings.default;
    $('rules').value = settings.tenant ? JSON.stringify(settings.tenant, null, 2) : '';
    $('default-rules').textContent = settings.default ? JSON.stringify(settings.default, null, 2) : '(none: the deployment edits nothing)';
    $('effective').textContent = settings.effective === 'tenant'
      ? 'This site uses its own rules.'
      : 'This site uses the deployment\'s rules' + (shown ? ' (below); saving makes a copy of your own.' : '.');
    return true;
  });
}
function loadBlocked() {
  return api('blocked').then(json).then(answer => {
    const body = $('blocked');
    body.replaceChildren();
    const pages = answer.ok ? answer.body.pages : [];
    $('blocked-empty').hidden = pages.length > 0;
    for (const p of pages) {
      const row = document.createElement('tr');
      cell(row, p.pageId); cell(row, when(p.at_ms)); cell(row, p.outcome); cell(row, p.reason);
      retryButton(row, p.pageId);
      body.appendChild(row);
    }
  });
}
function loadQueue() {
  return api('queue').then(json).then(answer => {
    if (!answer.ok) return;
    $('waiting').textContent = String(answer.body.waiting);
    const body = $('dead-letters');
    body.replaceChildren();
    $('dead-empty').hidden = answer.body.deadLetters.length > 0;
    for (const p of answer.body.deadLetters) {
      const row = document.createElement('tr');
      cell(row, p.pageId); cell(row, when(p.at_ms)); cell(row, p.reason);
      retryButton(row, p.pageId);
      body.appendChild(row);
    }
  });
}
function auditQuery() {
  const query = new URLSearchParams();
  if ($('filter-page').value.trim()) query.set('page', $('filter-page').value.trim());
  if ($('filter-outcome').value) query.set('outcome', $('filter-outcome').value);
  if ($('filter-actor').value.trim()) query.set('actor', $('filter-actor').value.trim());
  return query;
}
let next = null;
function loadAudit(append) {
  const query = auditQuery();
  if (append && next) query.set('before', next);
  return api('audit?' + query).then(json).then(answer => {
    if (!answer.ok) { say('The audit trail could not be read: ' + (answer.body.error || answer.status)); return; }
    const body = $('audit');
    if (!append) body.replaceChildren();
    for (const r of answer.body.records) {
      const row = document.createElement('tr');
      cell(row, when(r.at_ms)); cell(row, r.page_id); cell(row, r.outcome);
      cell(row, r.acted_as.kind === 'app' ? 'the app' : r.acted_as.account_id);
      cell(row, r.strategy); cell(row, r.reason);
      body.appendChild(row);
    }
    next = answer.body.next || null;
    $('older').hidden = !next;
  });
}
$('settings-form').addEventListener('submit', event => {
  event.preventDefault();
  $('settings-error').hidden = true;
  let documentToSave = null;
  const text = $('rules').value.trim();
  const policy = $('policy').value;
  try {
    documentToSave = text ? JSON.parse(text) : (settings && settings.default ? JSON.parse(JSON.stringify(settings.default)) : {rules: []});
  } catch (error) {
    $('settings-error').hidden = false;
    $('settings-error').textContent = 'The rules are not valid JSON: ' + error.message;
    $('rules').focus();
    return;
  }
  if (documentToSave && typeof documentToSave === 'object' && !Array.isArray(documentToSave)) documentToSave.restricted_pages = policy;
  api('settings', {method: 'PUT', body: JSON.stringify({document: documentToSave})}).then(json).then(answer => {
    if (!answer.ok) {
      $('settings-error').hidden = false;
      $('settings-error').textContent = answer.body.error || ('Not saved (' + answer.status + ')');
      $('rules').focus();
      return;
    }
    say('Saved. The next event follows these rules.');
    loadSettings();
  });
});
$('reset').addEventListener('click', () => {
  api('settings', {method: 'PUT', body: JSON.stringify({document: null})}).then(json).then(answer => {
    say(answer.ok ? 'This site now uses the deployment\'s rules.' : 'Not saved: ' + (answer.body.error || answer.status));
    loadSettings();
  });
});
$('audit-form').addEventListener('submit', event => { event.preventDefault(); loadAudit(false); });
$('older').addEventListener('click', () => loadAudit(true));
$('download-csv').addEventListener('click', () => {
  const query = auditQuery();
  query.set('format', 'csv');
  api('audit?' + query).then(response => {
    if (!response.ok) { say('The download failed (' + response.status + ').'); return; }
    return response.text().then(text => {
      const link = document.createElement('a');
      link.href = URL.createObjectURL(new Blob([text], {type: 'text/csv'}));
      link.download = 'understudy-audit.csv';
      document.body.appendChild(link);
      link.click();
      link.remove();
      const rows = Math.max(0, text.trim().split('\r\n').length - 1);
      say('Downloaded the audit trail: ' + rows + ' records.');
    });
  });
});
loadSettings().then(ok => {
  if (!ok) return;
  say('');
  return Promise.all([loadBlocked(), loadQueue(), loadAudit(false)]);
});
</script></body></html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_url_is_an_escaped_attribute() {
        let page = render("https://x.example/all.js?a=1&b=\"><script>");
        assert!(
            page.contains("src=\"https://x.example/all.js?a=1&amp;b=&quot;&gt;&lt;script&gt;\"")
        );
        assert!(!page.contains(CONNECT_JS_PLACEHOLDER));
        // Server data is never written as HTML.
        assert!(!PAGE.contains("innerHTML"));
    }
}
