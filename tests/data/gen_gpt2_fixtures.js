#!/usr/bin/env node
// Writes tests/data/gpt2_fixtures.json: GPT-2 token ids from the npm package gpt-3-encoder@1.1.4,
// the reference test_gpt2_tokenizer.cpp checks Gpt2Tokenizer against.
//   mkdir -p /tmp/gptenc && cd /tmp/gptenc && npm install gpt-3-encoder@1.1.4
//   NODE_PATH=/tmp/gptenc/node_modules node tests/data/gen_gpt2_fixtures.js
// Also records the token count and a hash of the ids of the whole Moby Dick corpus
// ($QUEST_CACHE/corpora/moby-dick.txt, from scripts/setup.sh) when that file is present.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const encoder = require('gpt-3-encoder');

const cases = [
  // Empty, single characters, plain words.
  '', ' ', 'a', 'A', '\n', 'hello', 'Hello world', ' Hello  world ', 'hello world!',
  // Whitespace runs: trailing, leading, tabs, newlines, CRLF, mixed with words.
  'trailing space ', 'trailing spaces   ', '   leading spaces', 'two  spaces', 'three   spaces',
  'tab\tseparated\tvalues', '\t\tindented', 'line one\nline two\n', 'para\n\npara\n\n\n',
  'windows\r\nline\r\nends', ' \n \n ', '\n\n\n', '    ', 'a \t b', 'x\t \ty', 'end\n ',
  'space then newline \nnext', '  \n  code', '\u00a0nbsp\u00a0word', 'a\u00a0\u00a0b',
  'ideographic\u3000space', 'thin\u2009space', 'line\u2028sep', 'bom\ufeffmid',
  '\ufeffleading bom', 'ogham\u1680mark', 'file\u001cseparator', 'next\u0085line',
  'zero\u200bwidth', 'mongolian\u180evowel', 'vertical\u000btab', 'form\u000cfeed',
  // Numbers and digit runs.
  '0', '12', '123456789012345678901234567890', '3.14159', '1,000,000', '2024-01-31',
  'version 1.2.3', 'x1y22z333', ' 42 is the answer', '$100.00 and 50%', '٣٤٥ Arabic-Indic',
  '½ and ² and Ⅻ', '𝟘𝟙𝟚 math digits', 'phone: +1 (555) 123-4567',
  // Contractions, upper case ones, curly quotes.
  "don't", "I'm", "you're", "we've", "they'll", "she'd", "it's", "IT'S", "DON'T", "I'M",
  "You'Re", "o'clock", "'s", "'tis", "''s", "rock 'n' roll", "the dogs' bones",
  "O'Neil", "D'Artagnan", "'Sup", "'Tis", "WE'LL", "THEY'RE", "JOHN'S book", "'Sam'", "'Ll",
  'don\u2019t', 'it\u2019s', '\u2018quoted\u2019', '\u201cdouble\u201d', "let's 'quote' it",
  "'ll 're 've 'm 'd 't", " 's", "a's'b't",
  // Punctuation runs and symbols.
  '!!!', '...', '?!?!', '--', '-----', '==========', '#include <stdio.h>', 'foo(bar, baz);',
  'a.b.c', '(!)', '@user #tag', '<html><body>Hi</body></html>', '{"key": [1, 2, 3]}',
  '","', '"],["', "','", ' ,"', 'C++ & C#', '~`^|\\', '***bold***', 'e-mail: a@b.co',
  'http://example.com/path?q=1&r=2#frag', 'snake_case_name', 'camelCaseName', '::->',
  // Accents, composed and combining.
  'café', 'cafe\u0301', 'naïve résumé', 'Ærøskøbing', 'Straße', 'ÀÉÎÕÜ', 'ñandú',
  // Other scripts.
  '中文字符', '日本語のテキスト', 'カタカナ', '한국어 텍스트', 'Привет, мир!', 'Ελληνικά',
  'עברית', 'العربية', 'हिन्दी', 'ภาษาไทย', 'ქართული', 'Հայերեն', 'Tiếng Việt',
  '中文 and English mixed', ' 中文', '𝔸𝔹ℂ math letters',
  // Emoji (astral, with joiners and variation selectors).
  '😀', '😀😃😄', 'emoji 👍 here', '👨‍👩‍👧‍👦 family', '❤️', '🇺🇸 flag', 'a😀b', ' 😀',
  // Control characters and the end-of-text literal (plain text, not special).
  '\u0000', 'nul\u0000byte', '\u007f', '\u0001\u0002\u0003', '<|endoftext|>',
  'before<|endoftext|>after', ' <|endoftext|> ', '<|endoftext|><|endoftext|>',
  // Long runs.
  'a'.repeat(300), ' '.repeat(300), '!'.repeat(300), '1'.repeat(300), 'ab'.repeat(150),
  '\n'.repeat(50) + 'x', 'supercalifragilisticexpialidocious',
  'pneumonoultramicroscopicsilicovolcanoconiosis',
  // Real English text.
  'Call me Ishmael. Some years ago\u2014never mind how long precisely\u2014having little or no ' +
      'money in my purse, and nothing particular to interest me on shore, I thought I would ' +
      'sail about a little and see the watery part of the world.',
  'It is a truth universally acknowledged, that a single man in possession of a good fortune, ' +
      'must be in want of a wife.\n\nHowever little known the feelings or views of such a man ' +
      'may be on his first entering a neighbourhood, this truth is so well fixed in the minds ' +
      'of the surrounding families, that he is considered as the rightful property of some one ' +
      'or other of their daughters.',
  'Four score and seven years ago our fathers brought forth on this continent, a new nation, ' +
      'conceived in Liberty, and dedicated to the proposition that all men are created equal.\n' +
      '  Now we are engaged in a great civil war, testing whether that nation, or any nation so ' +
      'conceived and so dedicated, can long endure. We are met on a great battle-field of that ' +
      "war. We have come to dedicate a portion of that field, as a final resting place for " +
      "those who here gave their lives that that nation might live. It's altogether fitting " +
      'and proper that we should do this.\n',
  'def encode(self, text):\n    bpe_tokens = []\n    for token in re.findall(self.pat, text):\n' +
      '        token = \'\'.join(self.byte_encoder[b] for b in token.encode("utf-8"))\n' +
      '        bpe_tokens.extend(self.encoder[t] for t in self.bpe(token).split(" "))\n' +
      '    return bpe_tokens\n',
];

// Seeded random strings over an alphabet chosen to hit the pattern's edge cases.
function mulberry32(seed) {
  return function() {
    seed = (seed + 0x6D2B79F5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const alphabet = [
  'a', 'b', 'e', 's', 't', 'r', 'v', 'm', 'l', 'd', 'S', 'T', 'x', 'Z', 'the', 'ing', "'", "'",
  '\u2019', '0', '1', '9', '42', '.', ',', '"', '!', '?', '-', '(', ')', '[', ']', '{', '}', '<',
  '|', '>', '_', '#', '/', '\\', ' ', ' ', ' ', ' ', '  ', '\t', '\n', '\n', '\r\n', '\u000b',
  '\u000c', '\u00a0', '\u1680', '\u2000', '\u2009', '\u2028', '\u2029', '\u202f', '\u205f',
  '\u3000', '\ufeff', '\u001c', '\u001f', '\u0085', '\u180e', '\u200b', '\u200d', '\u0000',
  '\u007f', 'é', 'ß', 'ñ', 'e\u0301', '\u0301', 'ж', 'Ω', '中', '語', 'の', '한', 'ع', 'ह',
  '\u093f', '٣', '½', '²', 'Ⅻ', '😀', '👍', '\ud835\udd38', '\ud835\udfd8', '\ufe0f',
  '<|endoftext|>',
];
const rng = mulberry32(20240531);
for (let k = 0; k < 600; ++k) {
  const len = 1 + Math.floor(rng() * 24);
  let s = '';
  for (let i = 0; i < len; ++i) s += alphabet[Math.floor(rng() * alphabet.length)];
  cases.push(s);
}

// 64-bit FNV-1a, over bytes (text) or over ids as 4 little-endian bytes each.
const FNV_OFFSET = 0xcbf29ce484222325n, FNV_PRIME = 0x100000001b3n, MASK = (1n << 64n) - 1n;
function fnv1a(bytes) {
  let h = FNV_OFFSET;
  for (const b of bytes) h = ((h ^ BigInt(b)) * FNV_PRIME) & MASK;
  return h.toString(16).padStart(16, '0');
}
function idBytes(ids) {
  const buf = Buffer.alloc(ids.length * 4);
  ids.forEach((id, i) => buf.writeUInt32LE(id, i * 4));
  return buf;
}

const out = {
  generator: 'tests/data/gen_gpt2_fixtures.js with gpt-3-encoder@1.1.4 on node ' +
      process.versions.node + ' (Unicode ' + process.versions.unicode + ')',
  cases: cases.map(text => ({text, ids: encoder.encode(text)})),
  corpora: [],
};

const cache = process.env.QUEST_CACHE || path.join(os.homedir(), '.cache', 'quest');
const moby = path.join(cache, 'corpora', 'moby-dick.txt');
if (fs.existsSync(moby)) {
  const bytes = fs.readFileSync(moby);
  const ids = encoder.encode(new TextDecoder('utf-8', {fatal: true}).decode(bytes));
  out.corpora.push({
    file: 'corpora/moby-dick.txt',
    bytes: bytes.length,
    text_fnv1a64: fnv1a(bytes),
    tokens: ids.length,
    ids_fnv1a64: fnv1a(idBytes(ids)),
  });
} else {
  console.error('note: ' + moby + ' not found, no corpus check written');
}

const dest = path.join(__dirname, 'gpt2_fixtures.json');
fs.writeFileSync(dest, JSON.stringify(out, null, 0).replace(/\},\{"text"/g, '},\n{"text"') + '\n');
console.log('wrote ' + dest + ': ' + out.cases.length + ' cases, ' + out.corpora.length +
            ' corpus checks');
