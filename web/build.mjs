// Builds the call page into dist/: app.js (React + LiveKit, one minified bundle), app.css
// (@livekit/components-styles + src/app.css) and index.html. Everything is referenced with
// relative URLs and nothing is loaded from a CDN.
//   usage: node build.mjs   (testbed/build/web.sh runs it when the inputs changed)
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

await esbuild.build({
  absWorkingDir: root,
  // The CSS imported by main.tsx is bundled next to the JS under the same name: dist/app.css.
  entryPoints: { app: 'src/main.tsx' },
  outdir: dist,
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'es2020',
  minify: true,
  sourcemap: false,
  jsx: 'automatic',
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning', // esbuild prints the errors itself
}).catch(() => process.exit(1));

await copyFile(join(root, 'src', 'index.html'), join(dist, 'index.html'));
