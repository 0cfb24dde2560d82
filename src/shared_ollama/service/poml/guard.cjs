'use strict';
// Loaded (--require) before POML's renderer in every render process (service/poml/renderer.py). Templates
// evaluate JavaScript; Node's permission model already keeps them from files, child processes, workers and
// native addons. This takes away what it does not cover, and what the renderer does not need here:
// - the image libraries (native addons): a stand-in that refuses, so <img> is a clear error, not a crash;
// - the network globals (the renderer's isolated mode also runs it with no network at all);
// - signals to other processes of the service's user.
const { registerHooks } = require('node:module');

const STAND_INS = new Set(['sharp', 'canvas']);
const REFUSE = 'module.exports = function () { throw new Error("images are not supported in POML templates on this service"); };';

registerHooks({
  resolve(specifier, context, nextResolve) {
    if (STAND_INS.has(specifier)) {
      return { url: `stand-in:${specifier}`, shortCircuit: true };
    }
    return nextResolve(specifier, context);
  },
  load(url, context, nextLoad) {
    if (url.startsWith('stand-in:')) {
      return { format: 'commonjs', source: REFUSE, shortCircuit: true };
    }
    return nextLoad(url, context);
  },
});

for (const name of ['fetch', 'WebSocket', 'EventSource']) {
  delete globalThis[name];
}

process.kill = () => {
  throw new Error('signals are not available to POML templates');
};
