// The page's contract with the voicefleet call endpoint. URLs are relative (no leading
// slash) so the page works behind `kubectl port-forward` or under a path prefix.

export interface AgentInfo {
  namespace: string;
  name: string;
  agentName: string;
  ready: boolean;
}

/** What `POST api/token` grants: where to connect, as whom, and the room made for the call. */
export interface CallGrant {
  url: string;
  token: string;
  room: string;
}

export const agentKey = (a: { namespace: string; name: string }): string =>
  `${a.namespace}/${a.name}`;

export const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

async function fetchJson<T>(what: string, url: string, init?: RequestInit): Promise<T> {
  let res: Response;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new Error(`${what}: ${errorText(e)}`);
  }
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    body = undefined; // not JSON, e.g. a plain 404 page
  }
  if (!res.ok) {
    // The server's own message if it sent one, else the HTTP status.
    const err = (body as { error?: unknown } | undefined)?.error;
    throw new Error(
      typeof err === 'string' && err ? err : `${what}: HTTP ${res.status} ${res.statusText}`.trim(),
    );
  }
  if (body === undefined) throw new Error(`${what}: the answer is not JSON`);
  return body as T;
}

export async function listAgents(): Promise<AgentInfo[]> {
  const body = await fetchJson<{ agents?: AgentInfo[] }>('GET api/agents', 'api/agents', {
    headers: { Accept: 'application/json' },
  });
  return Array.isArray(body.agents) ? body.agents : [];
}

export async function requestToken(agent: { namespace: string; name: string }): Promise<CallGrant> {
  const grant = await fetchJson<CallGrant>('POST api/token', 'api/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ namespace: agent.namespace, name: agent.name }),
  });
  if (typeof grant.url !== 'string' || typeof grant.token !== 'string') {
    throw new Error('POST api/token: the answer has no url or token');
  }
  return grant;
}
