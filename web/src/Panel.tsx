import type { ReactNode } from 'react';
import type { AudioLevel } from './useAudioLevel';

export const BAR_COUNT = 7;

export interface TranscriptLine {
  key: string;
  speaker: 'agent' | 'user';
  text: string;
  final: boolean;
}

export interface PanelProps {
  /** The agent state from useVoiceAssistant, or "idle" before a call. */
  state: string;
  room: string;
  level: AudioLevel;
  lines: TranscriptLine[];
  visualizer: ReactNode;
}

const fmt = (n: number): string => n.toFixed(3);

/** Stand-in for BarVisualizer while no call (and so no LiveKit room context) exists. */
export function IdleBars(): ReactNode {
  return (
    <div className="lk-audio-bar-visualizer" data-lk-va-state="idle">
      {Array.from({ length: BAR_COUNT }, (_, i) => (
        <span key={i} className="lk-audio-bar" style={{ height: '20%' }} />
      ))}
    </div>
  );
}

/**
 * The call's status, rendered the same way before and during a call so the DOM contract
 * (#state, #room, #audio-level, #transcript) always exists.
 */
export function Panel({ state, room, level, lines, visualizer }: PanelProps): ReactNode {
  return (
    <section className="panel">
      <div className="status">
        <div id="state" data-state={state}>
          Agent: {state}
        </div>
        <span id="room" title="LiveKit room">
          {room}
        </span>
      </div>
      <div className="visualizer">{visualizer}</div>
      <div className="level">
        Agent audio level{' '}
        <span id="audio-level" data-level={fmt(level.level)} data-max={fmt(level.max)}>
          {fmt(level.level)} (max {fmt(level.max)})
        </span>
      </div>
      <ol id="transcript" aria-live="polite">
        {lines.map((l) => (
          <li key={l.key} data-speaker={l.speaker} data-final={String(l.final)}>
            {l.text}
          </li>
        ))}
      </ol>
    </section>
  );
}
