import '@livekit/components-styles';
import './app.css';

import { useCallback, useEffect, useMemo, useRef, useState, type ReactNode } from 'react';
import { createRoot } from 'react-dom/client';
import { DisconnectReason, MediaDeviceFailure } from 'livekit-client';
import { LiveKitRoom } from '@livekit/components-react';
import { agentKey, errorText, listAgents, requestToken, type AgentInfo, type CallGrant } from './api';
import { Call } from './Call';
import { IdleBars, Panel } from './Panel';

type Phase = 'loading' | 'idle' | 'requesting' | 'in-call';

const IDLE_LEVEL = { level: 0, max: 0 };
// Browsers give a page a microphone only in a secure context: https, or 127.0.0.1/localhost.
const INSECURE = window.isSecureContext
  ? ''
  : 'This page is not served over https or from 127.0.0.1/localhost, so the browser gives it no ' +
    'microphone: open it through `kubectl port-forward` (docs/quickstart.md) or behind TLS.';

function micError(failure: MediaDeviceFailure | undefined): string {
  switch (failure) {
    case MediaDeviceFailure.PermissionDenied:
      return 'Microphone permission denied: the agent cannot hear you.';
    case MediaDeviceFailure.NotFound:
      return 'No microphone found: the agent cannot hear you.';
    case MediaDeviceFailure.DeviceInUse:
      return 'The microphone is in use by another application.';
    default:
      return 'The microphone could not be opened.';
  }
}

function App(): ReactNode {
  const params = useMemo(() => new URLSearchParams(window.location.search), []);
  const [agents, setAgents] = useState<AgentInfo[] | null>(null); // null while loading
  const [selected, setSelected] = useState('');
  const [error, setError] = useState(INSECURE);
  const [requesting, setRequesting] = useState(false);
  const [grant, setGrant] = useState<CallGrant | null>(null);
  const autostart = useRef(params.get('autostart') === '1');

  useEffect(() => {
    listAgents().then(
      (list) => {
        setAgents(list);
        if (list.length === 0) {
          setError('No VoiceAgents found');
          return;
        }
        const wanted = params.get('agent');
        if (wanted && list.some((a) => agentKey(a) === wanted)) {
          setSelected(wanted);
          return;
        }
        if (wanted) {
          setError(`VoiceAgent ${wanted} not found`);
          autostart.current = false; // never call an agent that was not asked for
        }
        setSelected(agentKey(list.find((a) => a.ready) ?? list[0]));
      },
      (e: unknown) => {
        setAgents([]);
        setError(errorText(e));
      },
    );
  }, [params]);

  const startCall = useCallback(async () => {
    const agent = agents?.find((a) => agentKey(a) === selected);
    if (!agent || requesting || grant) return;
    setError(INSECURE); // the one error that outlives a new call
    setRequesting(true);
    try {
      setGrant(await requestToken(agent));
    } catch (e) {
      setError(errorText(e)); // stay idle
    } finally {
      setRequesting(false);
    }
  }, [agents, selected, requesting, grant]);

  // ?autostart=1 presses Call once the agents are loaded (used by a headless test).
  useEffect(() => {
    if (autostart.current && selected) {
      autostart.current = false;
      void startCall();
    }
  }, [selected, startCall]);

  // LiveKitRoom re-runs its connect effect when these change, so they must be stable.
  const onError = useCallback((e: Error) => {
    const failure = MediaDeviceFailure.getFailure(e);
    if (failure && failure !== MediaDeviceFailure.Other) {
      setError(micError(failure)); // keep the call: the agent can still be heard
      return;
    }
    setError(`LiveKit: ${e.message}`);
    setGrant(null);
  }, []);
  const onMediaDeviceFailure = useCallback((failure?: MediaDeviceFailure) => {
    setError(micError(failure));
  }, []);
  const onDisconnected = useCallback((reason?: DisconnectReason) => {
    setGrant(null);
    if (reason !== undefined && reason !== DisconnectReason.CLIENT_INITIATED) {
      const why = DisconnectReason[reason] ?? String(reason);
      setError((prev) => prev || `Call ended by the server (${why})`);
    }
  }, []);

  const phase: Phase = grant ? 'in-call' : requesting ? 'requesting' : agents ? 'idle' : 'loading';

  return (
    <main className="card" id="app" data-phase={phase}>
      <h1>voicefleet — call a VoiceAgent</h1>
      <p className="hint">Your microphone is sent to the agent; nothing is recorded by this page.</p>

      <div className="controls">
        <label htmlFor="agent">Agent</label>
        <select
          id="agent"
          value={selected}
          disabled={!agents?.length || phase !== 'idle'}
          onChange={(e) => setSelected(e.target.value)}
        >
          {agents === null && <option value="">loading…</option>}
          {agents?.map((a) => (
            <option key={agentKey(a)} value={agentKey(a)}>
              {agentKey(a)}
              {a.ready ? '' : ' (not ready)'}
            </option>
          ))}
        </select>
        {grant ? (
          // Unmounting LiveKitRoom disconnects from the room.
          <button id="hangup" className="hangup" onClick={() => setGrant(null)}>
            Hang up
          </button>
        ) : (
          <button id="call" disabled={phase !== 'idle' || !selected} onClick={() => void startCall()}>
            {requesting ? 'Calling…' : 'Call'}
          </button>
        )}
      </div>

      <p id="error" role="alert">
        {error}
      </p>

      {grant ? (
        <LiveKitRoom
          serverUrl={grant.url}
          token={grant.token}
          connect={true}
          audio={true}
          video={false}
          onError={onError}
          onMediaDeviceFailure={onMediaDeviceFailure}
          onDisconnected={onDisconnected}
        >
          <Call room={grant.room} />
        </LiveKitRoom>
      ) : (
        <Panel state="idle" room="" level={IDLE_LEVEL} lines={[]} visualizer={<IdleBars />} />
      )}
    </main>
  );
}

createRoot(document.getElementById('root')!).render(<App />);
