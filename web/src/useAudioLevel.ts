import { useEffect, useState } from 'react';
import type { Track } from 'livekit-client';

export interface AudioLevel {
  /** RMS of the last ~20 ms of samples, 0..1 (full scale). */
  level: number;
  /** Highest `level` seen since the track appeared. */
  max: number;
}

const SILENT: AudioLevel = { level: 0, max: 0 };

/**
 * Measures the decoded samples of a (remote) audio track with a WebAudio AnalyserNode every
 * 100 ms. Unlike "a track is subscribed", a non-zero level proves audio actually arrives.
 *
 * Why this works for a remote WebRTC track: Chrome only pulls a remote track's audio through
 * the WebAudio graph while the same track is also being played by a media element (otherwise
 * the MediaStreamAudioSourceNode stays silent). RoomAudioRenderer attaches every remote
 * microphone track to an <audio> element, so it must stay mounted next to this hook. The
 * analyser is deliberately not connected to the destination: the <audio> element already
 * plays the sound, and an AnalyserNode is processed without an output.
 *
 * A 100 ms timer rather than requestAnimationFrame keeps sampling in a background tab.
 */
export function useAudioLevel(track: Track | undefined): AudioLevel {
  const [level, setLevel] = useState<AudioLevel>(SILENT);
  const mst = track?.mediaStreamTrack;

  useEffect(() => {
    setLevel(SILENT);
    if (!mst) return;
    const ctx = new AudioContext();
    const source = ctx.createMediaStreamSource(new MediaStream([mst]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024; // ~21 ms at 48 kHz
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);

    // A context created without a user gesture starts suspended (autoplay policy): try now,
    // and again on the first click anywhere on the page.
    const resume = (): void => {
      if (ctx.state === 'suspended') ctx.resume().catch(() => undefined);
    };
    resume();
    document.addEventListener('click', resume);

    let max = 0;
    const timer = window.setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const rms = Math.sqrt(sum / samples.length);
      max = Math.max(max, rms);
      setLevel({ level: rms, max });
    }, 100);

    return () => {
      window.clearInterval(timer);
      document.removeEventListener('click', resume);
      source.disconnect();
      ctx.close().catch(() => undefined);
    };
  }, [mst]);

  return level;
}
