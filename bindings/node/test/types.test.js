'use strict';
// index.d.ts against test/types/usage.ts with the TypeScript compiler (a
// devDependency, installed by `npm ci`): the declarations must compile under
// --strict, and misuse marked @ts-expect-error must be rejected.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');

test('index.d.ts type-checks the documented usage', { skip: !fs.existsSync(tsc) && 'typescript not installed' },
  async () => {
    const r = await new Promise((resolve) => {
      execFile(process.execPath, [tsc, '-p', path.join(__dirname, 'types')], { cwd: root, timeout: 180000 },
               (err, stdout, stderr) => resolve({ code: err ? err.code : 0, out: stdout + stderr }));
    });
    assert.equal(r.code, 0, r.out);
  });
