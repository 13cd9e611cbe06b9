// The readers JupyterLab 4.6.3 puts between an output and the page, run in jsdom, and a scan of what they make.
//
// stdin: a JSON list of {"kind": "markdown" | "html", "text": ...}; stdout: a JSON list of
// {"index": i, "findings": [...]} for each item whose page holds anything script-bearing, or whose reader threw.
// "markdown" goes through removeMath, marked (the extensions and options of @jupyterlab/markedparser-extension),
// replaceMath and MathJax; "html" goes into the page as a trusted text/html output does, then MathJax. MathJax is
// set up as @jupyterlab/mathjax-extension's ensureMathDocument does (all TeX packages and require, SafeHandler,
// assistive MathML, CHTML with no font), with the jsdom adaptor in place of the browser one.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';
import { Marked, Renderer } from 'marked';
import { gfmHeadingId } from 'marked-gfm-heading-id';
import { mangle } from 'marked-mangle';

const require = createRequire(import.meta.url);
const { removeMath, replaceMath } = require('./latex.js');
require('mathjax-full/js/input/tex/require/RequireConfiguration');
const { mathjax } = require('mathjax-full/js/mathjax');
const { CHTML } = require('mathjax-full/js/output/chtml');
const { TeX } = require('mathjax-full/js/input/tex');
const { TeXFont } = require('mathjax-full/js/output/chtml/fonts/tex');
const { AllPackages } = require('mathjax-full/js/input/tex/AllPackages');
const { SafeHandler } = require('mathjax-full/js/ui/safe/SafeHandler');
const { HTMLHandler } = require('mathjax-full/js/handlers/html/HTMLHandler');
const { jsdomAdaptor } = require('mathjax-full/js/adaptors/jsdomAdaptor');
const { AssistiveMmlHandler } = require('mathjax-full/js/a11y/assistive-mml');

const adaptor = jsdomAdaptor(JSDOM);
mathjax.handlers.register(AssistiveMmlHandler(SafeHandler(new HTMLHandler(adaptor))));
class EmptyFont extends TeXFont {}
EmptyFont.defaultFonts = {};
const document = adaptor.document;
const mathDocument = mathjax.document(document, {
  InputJax: new TeX({
    packages: AllPackages.concat('require'),
    inlineMath: [['$', '$'], ['\\(', '\\)']],
    displayMath: [['$$', '$$'], ['\\[', '\\]']],
    processEscapes: true,
    processEnvironments: true
  }),
  OutputJax: new CHTML({ font: new EmptyFont() })
});

// marked as @jupyterlab/markedparser-extension configures it. Its code renderer highlights a fence with a language
// through CodeMirror into `<pre><code class="language-${lang}">`, the language unescaped; the same here, the code
// escaped as CodeMirror's highlighter escapes it.
const marked = new Marked();
marked.use(gfmHeadingId());
marked.use(mangle());
const renderer = new Renderer();
const originalCode = renderer.code;
renderer.code = function (token) {
  if (token.lang) {
    const code = token.text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
    return `<pre><code class="language-${token.lang}">${code}</code></pre>`;
  }
  return originalCode.call(renderer, token);
};
const markedOptions = { async: true, gfm: true, renderer };

const SAFE_URL = /^\s*(https?:|mailto:)/i;
const ALWAYS = new Set(['script', 'iframe', 'object', 'embed', 'img', 'form', 'style', 'link', 'meta', 'base', 'frame',
  'frameset', 'applet', 'audio', 'video', 'source', 'track', 'input', 'button', 'textarea', 'select', 'template']);
const URL_ATTRIBUTES = new Set(['href', 'src', 'action', 'formaction', 'xlink:href', 'data', 'srcset', 'poster',
  'background', 'cite', 'longdesc', 'ping', 'lowsrc', 'dynsrc', 'manifest', 'codebase', 'archive']);

function scan(host) {
  const findings = [];
  for (const element of host.querySelectorAll('*')) {
    const tag = element.localName.toLowerCase();
    if (ALWAYS.has(tag)) findings.push(`<${tag}>`);
    for (const { name, value } of element.attributes) {
      const lower = name.toLowerCase();
      if (lower.startsWith('on')) findings.push(`<${tag} ${name}>`);
      else if (URL_ATTRIBUTES.has(lower) && !SAFE_URL.test(value)) findings.push(`<${tag} ${name}="${value.slice(0, 60)}">`);
      else if (lower === 'style' && /url\s*\(|expression\s*\(|@import/i.test(value)) findings.push(`<${tag} style="${value.slice(0, 60)}">`);
      else if ((lower === 'id' || lower === 'name') && !/^mjx-/.test(value) && !(tag.startsWith('h') && lower === 'id')) findings.push(`<${tag} ${name}="${value.slice(0, 60)}">`);
    }
  }
  return findings;
}

async function read(item) {
  let html = item.text;
  if (item.kind === 'markdown') {
    const parts = removeMath(item.text);
    html = replaceMath(await marked.parse(parts.text, markedOptions), parts.math);
  }
  const host = document.createElement('div');
  host.innerHTML = html;
  document.body.appendChild(host);
  try {
    mathDocument.options.elements = [host];
    mathDocument.clear().render();
    delete mathDocument.options.elements;
    return scan(host);
  } finally {
    host.remove();
  }
}

const items = JSON.parse(readFileSync(0, 'utf8'));
const results = [];
for (let index = 0; index < items.length; index++) {
  let findings;
  try {
    findings = await read(items[index]);
  } catch (error) {
    findings = [`the reader threw: ${String(error).slice(0, 120)}`];
  }
  if (findings.length) results.push({ index, findings });
}
process.stdout.write(JSON.stringify(results));
