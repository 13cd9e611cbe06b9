// removeMath and replaceMath from JupyterLab 4.6.3, packages/rendermime/src/latex.ts
// (jupyterlab/jupyterlab at e7255a9334c12ad8f9cb15db27584215fab5ece2), ported line for line to plain JavaScript:
// the npm package @jupyterlab/rendermime would bring all of JupyterLab's services with it. The only change is that
// the Internet Explorer branch, which reads `navigator`, is left out.
'use strict';

const inline = '$';
const MATHSPLIT =
  /(\$\$?|\\(?:begin|end)\{[a-z]*\*?\}|\\[{}$]|[{}]|(?:\n\s*)+|@@\d+@@|\\\\[()[\]])/i;

function removeMath(text) {
  const math = [];
  let start = null;
  let end = null;
  let last = null;
  let braces = 0;
  let deTilde;
  const hasCodeSpans = text.includes('`') || text.includes('~~~');
  if (hasCodeSpans) {
    text = text
      .replace(/~/g, '~T')
      .replace(/^(?<fence>`{3,}|(~T){3,})[^`\n]*\n([\s\S]*?)^\k<fence>`*$/gm, wholematch =>
        wholematch.replace(/\$/g, '~D'))
      .replace(/(^|[^\\])(`+)([^\n]*?[^`\n])\2(?!`)/gm, wholematch => wholematch.replace(/\$/g, '~D'));
    deTilde = text => text.replace(/~([TD])/g, (wholematch, character) => (character === 'T' ? '~' : inline));
  } else {
    deTilde = text => text;
  }
  let blocks = text.replace(/\r\n?/g, '\n').split(MATHSPLIT);
  for (let i = 1, m = blocks.length; i < m; i += 2) {
    const block = blocks[i];
    if (block.charAt(0) === '@') {
      blocks[i] = '@@' + math.length + '@@';
      math.push(block);
    } else if (start !== null) {
      if (block === end) {
        if (braces) {
          last = i;
        } else {
          blocks = processMath(start, i, deTilde, math, blocks);
          start = null;
          end = null;
          last = null;
        }
      } else if (block.match(/\n.*\n/)) {
        if (last !== null) {
          i = last;
          blocks = processMath(start, i, deTilde, math, blocks);
        }
        start = null;
        end = null;
        last = null;
        braces = 0;
      } else if (block === '{') {
        braces++;
      } else if (block === '}' && braces) {
        braces--;
      }
    } else {
      if (block === inline || block === '$$') {
        start = i;
        end = block;
        braces = 0;
      } else if (block === '\\\\(' || block === '\\\\[') {
        start = i;
        end = block.slice(-1) === '(' ? '\\\\)' : '\\\\]';
        braces = 0;
      } else if (block.substr(1, 5) === 'begin') {
        start = i;
        end = '\\end' + block.substr(6);
        braces = 0;
      }
    }
  }
  if (start !== null && last !== null) {
    blocks = processMath(start, last, deTilde, math, blocks);
  }
  return { text: deTilde(blocks.join('')), math };
}

function replaceMath(text, math) {
  const process = (match, n) => {
    let group = math[n];
    if (group.substr(0, 3) === '\\\\(' && group.substr(group.length - 3) === '\\\\)') {
      group = '\\(' + group.substring(3, group.length - 3) + '\\)';
    } else if (group.substr(0, 3) === '\\\\[' && group.substr(group.length - 3) === '\\\\]') {
      group = '\\[' + group.substring(3, group.length - 3) + '\\]';
    }
    return group;
  };
  return text.replace(/@@(\d+)@@/g, process);
}

function processMath(i, j, preProcess, math, blocks) {
  let block = blocks
    .slice(i, j + 1)
    .join('')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;');
  while (j > i) {
    blocks[j] = '';
    j--;
  }
  blocks[i] = '@@' + math.length + '@@';
  if (preProcess) {
    block = preProcess(block);
  }
  math.push(block);
  return blocks;
}

module.exports = { removeMath, replaceMath };
