// The page byline panel of understudy's Forge app (UI Kit; `confluence:contentBylineItem` in
// ../../manifest.yml). It is the Forge twin of the Connect panel (`GET /ui/page`): it lists what
// the app did on this page and appends a note to the page as the person using it.
//
// Both calls go through `invokeRemote` to the `edit-api` endpoint (the module's resolver): Forge
// adds a Forge Invocation Token, the app system token and this user's token, and proxies the call
// to the backend's edit API (functions/edits/src/api.rs). The paths are in routes.json, which
// tests/deployment checks against the backend's route table.
import React, { useCallback, useEffect, useState } from 'react';
import ForgeReconciler, {
  Button,
  Heading,
  Inline,
  List,
  ListItem,
  SectionMessage,
  Spinner,
  Stack,
  Text,
  Textfield,
  useProductContext,
} from '@forge/react';
import { invokeRemote } from '@forge/bridge';
import routes from './routes.json';

// A route's path with the page id filled in (the id comes from Confluence; encoded all the same).
const pathOf = (route, pageId, query = '') =>
  route.path.replace('{pageId}', encodeURIComponent(pageId)) + query;

// Calls one route and gives the JSON body of a 2xx answer. The backend answers every error with
// `{"error": "<fixed words>"}`; invokeRemote resolves non-2xx answers and rejects a 401 (Forge
// keeps that status for a token the backend refused).
async function call(route, pageId, { query, body } = {}) {
  const response = await invokeRemote({
    method: route.method,
    path: pathOf(route, pageId, query),
    // invokeRemote sends `JSON.stringify(body)`.
    ...(body === undefined ? {} : { headers: { 'Content-Type': 'application/json' }, body }),
  });
  const status = response?.status ?? 0;
  const payload = response?.body ?? {};
  if (status < 200 || status > 299) {
    throw new Error(payload.error || `The app answered with status ${status}.`);
  }
  return payload;
}

// Text as Confluence storage format (XHTML): the note is the user's words, never markup.
const escapeXml = (text) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

const describe = (record) => {
  const who =
    record.acted_as?.kind === 'app' ? 'the app' : `a user (${record.acted_as?.account_id ?? 'unknown'})`;
  return `${new Date(record.at_ms).toLocaleString()}: ${record.outcome} by ${who} (${record.strategy}): ${record.reason}`;
};

const App = () => {
  const context = useProductContext();
  const pageId = context?.extension?.content?.id;
  const [records, setRecords] = useState([]);
  const [next, setNext] = useState(null);
  const [loading, setLoading] = useState(false);
  const [note, setNote] = useState('');
  const [sending, setSending] = useState(false);
  const [status, setStatus] = useState(null);
  const [error, setError] = useState(null);

  // The newest records, or (`older`) the ones after the last cursor.
  const load = useCallback(
    async (older, cursor) => {
      if (!pageId) return;
      setLoading(true);
      setError(null);
      try {
        const query = older && cursor ? `?before=${encodeURIComponent(cursor)}` : '';
        const answer = await call(routes.audit, pageId, { query });
        const page = Array.isArray(answer.records) ? answer.records : [];
        setRecords((shown) => (older ? [...shown, ...page] : page));
        setNext(answer.next ?? null);
      } catch (e) {
        setError(e.message || 'The audit trail could not be read.');
      } finally {
        setLoading(false);
      }
    },
    [pageId],
  );

  useEffect(() => {
    load(false, null);
  }, [load]);

  const append = async () => {
    const text = note.trim();
    if (!pageId || !text) return;
    setSending(true);
    setStatus(null);
    setError(null);
    try {
      const answer = await call(routes.edits, pageId, {
        body: { edit: [{ append: `<p>${escapeXml(text)}</p>` }] },
      });
      setStatus(answer.audit?.reason ?? 'Done.');
      setNote('');
    } catch (e) {
      setError(e.message || 'The edit could not be made.');
    } finally {
      setSending(false);
      load(false, null);
    }
  };

  if (!context) return <Spinner label="Loading" />;
  if (!pageId) return <Text>Open a page to see what Understudy did on it.</Text>;

  return (
    <Stack space="space.150">
      <Heading as="h3">Understudy on this page</Heading>
      <Inline space="space.100" alignBlock="center">
        <Textfield
          name="note"
          placeholder="Append a note as yourself"
          value={note}
          maxLength={2000}
          onChange={(event) => setNote(event.target.value ?? '')}
        />
        <Button appearance="primary" isDisabled={sending || !note.trim()} onClick={append}>
          Append
        </Button>
      </Inline>
      {status && <Text>{status}</Text>}
      {error && (
        <SectionMessage appearance="error" title="Understudy">
          <Text>{error}</Text>
        </SectionMessage>
      )}
      {records.length === 0 && !loading && !error && <Text>Nothing recorded on this page yet.</Text>}
      {records.length > 0 && (
        <List type="ordered">
          {records.map((record) => (
            <ListItem key={`${record.job_id}:${record.at_ms}`}>{describe(record)}</ListItem>
          ))}
        </List>
      )}
      {loading && <Spinner label="Loading the audit trail" />}
      {next && !loading && <Button onClick={() => load(true, next)}>Older records</Button>}
    </Stack>
  );
};

ForgeReconciler.render(
  <React.StrictMode>
    <App />
  </React.StrictMode>,
);
