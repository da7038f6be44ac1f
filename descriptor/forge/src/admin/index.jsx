// The site admins' page of understudy's Forge app (UI Kit; `confluence:globalSettings` in
// ../../../manifest.yml). It is the Forge twin of the Connect admin page (`GET /ui/admin`): the
// site's restricted-page policy and rules (with save), the pages whose last edit was blocked or
// failed (with retry), queue health, and the audit trail with filters.
//
// Every call goes through `invokeRemote` to the `admin-api` endpoint (the module's resolver):
// Forge adds a Forge Invocation Token naming this user, the user's token and the app system token,
// and proxies the call to the backend's admin API (functions/admin/src/lib.rs), which asks
// Confluence on every call whether this user is a site admin (403 otherwise). The paths are in
// routes.json, which tests/deployment checks against the backend's route table and template.yaml.
import React, { useCallback, useEffect, useState } from 'react';
import ForgeReconciler, {
  Button,
  DynamicTable,
  Heading,
  Inline,
  Label,
  SectionMessage,
  Select,
  Spinner,
  Stack,
  Text,
  TextArea,
  Textfield,
} from '@forge/react';
import { invokeRemote } from '@forge/bridge';
import routes from './routes.json';

// An HTTP error of the admin API, with its status (403: not a site admin).
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Calls one route and gives the JSON body of a 2xx answer. The backend answers every error with
// `{"error": "<fixed words>"}`; invokeRemote resolves non-2xx answers and rejects a 401 (Forge
// keeps that status for a token the backend refused).
async function call(route, { query, body } = {}) {
  const search = query && query.toString() ? `?${query}` : '';
  const response = await invokeRemote({
    method: route.method,
    path: route.path + search,
    // invokeRemote sends `JSON.stringify(body)`.
    ...(body === undefined ? {} : { headers: { 'Content-Type': 'application/json' }, body }),
  });
  const status = response?.status ?? 0;
  const payload = response?.body ?? {};
  if (status < 200 || status > 299) {
    throw new ApiError(status, payload.error || `The app answered with status ${status}.`);
  }
  return payload;
}

const POLICIES = [
  { label: 'Edit as the user who made the change (impersonate)', value: 'impersonate' },
  { label: "Add the app to the page's restrictions as that user (grant)", value: 'grant' },
  { label: 'Leave the page alone (skip)', value: 'skip' },
];
const OUTCOMES = [
  { label: 'Any', value: '' },
  ...['edited', 'unchanged', 'blocked', 'failed', 'refused'].map((o) => ({ label: o, value: o })),
];

const when = (ms) => new Date(ms).toLocaleString();
const actor = (record) =>
  record.acted_as?.kind === 'app' ? 'the app' : record.acted_as?.account_id ?? 'unknown';
const head = (...titles) => ({ cells: titles.map((title) => ({ key: title, content: title })) });
const pretty = (document) => (document ? JSON.stringify(document, null, 2) : '');

// The policy and the site's rules, next to the deployment's (`initial`: the first answer).
const Settings = ({ initial, onStatus }) => {
  const [settings, setSettings] = useState(initial);
  const [policy, setPolicy] = useState(initial.policy || 'impersonate');
  const [text, setText] = useState(pretty(initial.tenant));
  const [saving, setSaving] = useState(false);
  const [problem, setProblem] = useState(null);

  const load = async () => {
    const answer = await call(routes.settings);
    setSettings(answer);
    setPolicy(answer.policy || 'impersonate');
    setText(pretty(answer.tenant));
  };

  const save = async (document) => {
    setSaving(true);
    setProblem(null);
    try {
      await call(routes.saveSettings, { body: { document } });
      onStatus(document === null ? "This site now uses the deployment's rules." : 'Saved. The next event follows these rules.');
      await load();
    } catch (e) {
      setProblem(e.message);
    } finally {
      setSaving(false);
    }
  };

  const saveEdited = () => {
    let document;
    try {
      // Empty: a copy of the deployment's rules (or none) with the chosen policy.
      document = text.trim()
        ? JSON.parse(text)
        : settings?.default
          ? JSON.parse(JSON.stringify(settings.default))
          : { rules: [] };
    } catch (e) {
      setProblem(`The rules are not valid JSON: ${e.message}`);
      return;
    }
    if (document && typeof document === 'object' && !Array.isArray(document)) {
      document.restricted_pages = policy;
    }
    save(document);
  };

  return (
    <Stack space="space.100">
      <Heading as="h3">Policy and rules</Heading>
      <Text>
        {settings.effective === 'tenant'
          ? 'This site uses its own rules.'
          : "This site uses the deployment's rules; saving makes a copy of its own."}
      </Text>
      <Label labelFor="policy">When a restriction blocks the app</Label>
      <Select
        inputId="policy"
        options={POLICIES}
        value={POLICIES.find((p) => p.value === policy)}
        onChange={(option) => setPolicy(option?.value ?? 'impersonate')}
      />
      <Label labelFor="rules">This site's edit rules (JSON; empty to start from the deployment's)</Label>
      <TextArea id="rules" value={text} minimumRows={10} onChange={(event) => setText(event.target.value ?? '')} />
      {problem && (
        <SectionMessage appearance="error" title="Not saved">
          <Text>{problem}</Text>
        </SectionMessage>
      )}
      <Inline space="space.100">
        <Button appearance="primary" isDisabled={saving} onClick={saveEdited}>
          Save
        </Button>
        <Button isDisabled={saving} onClick={() => save(null)}>
          Use the deployment's rules
        </Button>
      </Inline>
      <Label labelFor="default-rules">The deployment's rules</Label>
      <TextArea id="default-rules" isReadOnly value={pretty(settings.default) || '(none: the deployment edits nothing)'} />
    </Stack>
  );
};

// A "Retry now" button for a parked page.
const RetryButton = ({ pageId, onDone, onStatus }) => {
  const [busy, setBusy] = useState(false);
  const retry = async () => {
    setBusy(true);
    try {
      await call(routes.retry, { body: { pageId } });
      onStatus(`Page ${pageId} is queued again.`);
      onDone();
    } catch (e) {
      onStatus(`Retry refused: ${e.message}`);
      setBusy(false);
    }
  };
  return (
    <Button isDisabled={busy} onClick={retry}>
      Retry now
    </Button>
  );
};

// Pages whose last edit was blocked or failed, newest first, and queue health.
const Blocked = ({ onStatus, version, onChange }) => {
  const [pages, setPages] = useState([]);
  const [next, setNext] = useState(null);
  const [queue, setQueue] = useState(null);
  const [loading, setLoading] = useState(false);
  const [problem, setProblem] = useState(null);

  const load = useCallback(async (after) => {
    setLoading(true);
    setProblem(null);
    try {
      const query = new URLSearchParams();
      if (after) query.set('after', after);
      const [listing, health] = await Promise.all([
        call(routes.blocked, { query }),
        after ? Promise.resolve(null) : call(routes.queue),
      ]);
      const page = Array.isArray(listing.pages) ? listing.pages : [];
      setPages((shown) => (after ? [...shown, ...page] : page));
      setNext(listing.next ?? null);
      if (health) setQueue(health);
    } catch (e) {
      setProblem(e.message);
    } finally {
      setLoading(false);
    }
  }, []);

  useEffect(() => {
    load(null);
  }, [load, version]);

  const row = (p, withOutcome) => ({
    key: `${p.pageId}:${p.at_ms}`,
    cells: [
      { key: 'page', content: p.pageId },
      { key: 'when', content: when(p.at_ms) },
      ...(withOutcome ? [{ key: 'outcome', content: p.outcome }] : []),
      { key: 'reason', content: p.reason },
      { key: 'action', content: <RetryButton pageId={p.pageId} onDone={onChange} onStatus={onStatus} /> },
    ],
  });

  return (
    <Stack space="space.100">
      <Heading as="h3">Blocked pages</Heading>
      {problem && (
        <SectionMessage appearance="error" title="Blocked pages">
          <Text>{problem}</Text>
        </SectionMessage>
      )}
      <DynamicTable
        caption="Pages whose last edit was blocked or failed, newest first"
        head={head('Page', 'When', 'Outcome', 'Why, and what to do', 'Action')}
        rows={pages.map((p) => row(p, true))}
        isLoading={loading}
        emptyView="No page is blocked."
      />
      {next && !loading && <Button onClick={() => load(next)}>More pages</Button>}
      <Heading as="h3">Queue health</Heading>
      <Text>Jobs waiting (all sites): {queue ? String(queue.waiting) : '–'}</Text>
      <DynamicTable
        caption="Dead letters of this site"
        head={head('Page', 'When', 'Reason', 'Action')}
        rows={(queue?.deadLetters ?? []).map((p) => row(p, false))}
        isLoading={loading}
        emptyView="No dead letters."
      />
    </Stack>
  );
};

// The audit trail, filtered by page, outcome and who acted, newest first.
const Audit = ({ version }) => {
  const [page, setPage] = useState('');
  const [outcome, setOutcome] = useState('');
  const [acted, setActed] = useState('');
  const [records, setRecords] = useState([]);
  const [next, setNext] = useState(null);
  const [loading, setLoading] = useState(false);
  const [problem, setProblem] = useState(null);

  const load = useCallback(
    async (before) => {
      setLoading(true);
      setProblem(null);
      try {
        const query = new URLSearchParams();
        if (page.trim()) query.set('page', page.trim());
        if (outcome) query.set('outcome', outcome);
        if (acted.trim()) query.set('actor', acted.trim());
        if (before) query.set('before', before);
        const answer = await call(routes.audit, { query });
        const shown = Array.isArray(answer.records) ? answer.records : [];
        setRecords((old) => (before ? [...old, ...shown] : shown));
        setNext(answer.next ?? null);
      } catch (e) {
        setProblem(e.message);
      } finally {
        setLoading(false);
      }
    },
    [page, outcome, acted],
  );

  // Loaded at first and again after a retry (with the filters as they are); "Filter" applies them.
  useEffect(() => {
    load(null);
  }, [version]);

  return (
    <Stack space="space.100">
      <Heading as="h3">Audit trail</Heading>
      <Inline space="space.150" alignBlock="end" shouldWrap>
        <Stack>
          <Label labelFor="filter-page">Page id</Label>
          <Textfield id="filter-page" value={page} onChange={(event) => setPage(event.target.value ?? '')} />
        </Stack>
        <Stack>
          <Label labelFor="filter-outcome">Outcome</Label>
          <Select
            inputId="filter-outcome"
            options={OUTCOMES}
            value={OUTCOMES.find((o) => o.value === outcome)}
            onChange={(option) => setOutcome(option?.value ?? '')}
          />
        </Stack>
        <Stack>
          <Label labelFor="filter-actor">Acted as (app or an accountId)</Label>
          <Textfield id="filter-actor" value={acted} onChange={(event) => setActed(event.target.value ?? '')} />
        </Stack>
        <Button onClick={() => load(null)}>Filter</Button>
      </Inline>
      {problem && (
        <SectionMessage appearance="error" title="Audit trail">
          <Text>{problem}</Text>
        </SectionMessage>
      )}
      <DynamicTable
        caption="Newest first"
        head={head('When', 'Page', 'Outcome', 'Acted as', 'How', 'Reason')}
        rows={records.map((r) => ({
          key: `${r.job_id}:${r.at_ms}:${r.page_id}`,
          cells: [
            { key: 'when', content: when(r.at_ms) },
            { key: 'page', content: r.page_id },
            { key: 'outcome', content: r.outcome },
            { key: 'actor', content: actor(r) },
            { key: 'how', content: r.strategy },
            { key: 'reason', content: r.reason },
          ],
        }))}
        isLoading={loading}
        emptyView="No records."
      />
      {next && !loading && <Button onClick={() => load(next)}>Older records</Button>}
    </Stack>
  );
};

const App = () => {
  // The first answer tells whether this user may see the page at all (403: not a site admin).
  const [settings, setSettings] = useState(null);
  const [refusal, setRefusal] = useState(null);
  const [status, setStatus] = useState(null);
  // Bumped after a retry: the blocked list, the queue and the audit trail are read again.
  const [version, setVersion] = useState(0);

  useEffect(() => {
    call(routes.settings)
      .then(setSettings)
      .catch((e) =>
        setRefusal(
          e.status === 403
            ? `Only site admins may use this page. ${e.message}`
            : `The app could not be reached: ${e.message}`,
        ),
      );
  }, []);

  if (refusal) {
    return (
      <SectionMessage appearance="error" title="Understudy">
        <Text>{refusal}</Text>
      </SectionMessage>
    );
  }
  if (!settings) return <Spinner label="Loading" />;
  return (
    <Stack space="space.300">
      <Heading as="h2">Understudy administration</Heading>
      {status && (
        <SectionMessage appearance="information">
          <Text>{status}</Text>
        </SectionMessage>
      )}
      <Settings initial={settings} onStatus={setStatus} />
      <Blocked onStatus={setStatus} version={version} onChange={() => setVersion((v) => v + 1)} />
      <Audit version={version} />
    </Stack>
  );
};

ForgeReconciler.render(
  <React.StrictMode>
    <App />
  </React.StrictMode>,
);
