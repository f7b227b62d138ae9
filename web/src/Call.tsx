import { useMemo, type ReactNode } from 'react';
import { Track, type TranscriptionSegment } from 'livekit-client';
import {
  BarVisualizer,
  RoomAudioRenderer,
  StartAudio,
  useLocalParticipant,
  useTrackTranscription,
  useVoiceAssistant,
  type TrackReferenceOrPlaceholder,
} from '@livekit/components-react';
import { BAR_COUNT, Panel, type TranscriptLine } from './Panel';
import { useAudioLevel } from './useAudioLevel';

/** The live call; must be rendered inside <LiveKitRoom>. */
export function Call({ room }: { room: string }): ReactNode {
  const { state, audioTrack, agentTranscriptions } = useVoiceAssistant();

  // The user's own speech, as transcribed by the agent and sent back against the local
  // microphone track (the same per-track transcription events useVoiceAssistant reads for
  // the agent's track, so both sides share one segment type, id and clock).
  const { localParticipant, microphoneTrack } = useLocalParticipant();
  const micRef = useMemo<TrackReferenceOrPlaceholder>(
    () =>
      microphoneTrack
        ? { participant: localParticipant, source: Track.Source.Microphone, publication: microphoneTrack }
        : { participant: localParticipant, source: Track.Source.Microphone },
    [localParticipant, microphoneTrack],
  );
  const { segments: userTranscriptions } = useTrackTranscription(micRef);

  const level = useAudioLevel(audioTrack?.publication.track);

  // Segments are deduplicated by id upstream (a streaming segment is replaced in place), so
  // keying the <li> by id updates a line instead of appending a new one.
  const lines = useMemo<TranscriptLine[]>(() => {
    const tag = (speaker: TranscriptLine['speaker']) => (s: TranscriptionSegment) => ({
      key: `${speaker}:${s.id}`,
      speaker,
      text: s.text,
      final: s.final,
      at: s.firstReceivedTime,
    });
    return [...agentTranscriptions.map(tag('agent')), ...userTranscriptions.map(tag('user'))]
      .sort((a, b) => a.at - b.at)
      .map(({ at: _at, ...line }) => line);
  }, [agentTranscriptions, userTranscriptions]);

  return (
    <>
      {/* Plays the agent's audio (and keeps its track flowing for useAudioLevel). */}
      <RoomAudioRenderer />
      {/* Only visible when the browser blocks audio playback. */}
      <StartAudio label="Click to hear the agent" className="start-audio" />
      <Panel
        state={state}
        room={room}
        level={level}
        lines={lines}
        visualizer={<BarVisualizer state={state} track={audioTrack} barCount={BAR_COUNT} />}
      />
    </>
  );
}
