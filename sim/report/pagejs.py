"""The script of the HTML page: it rebuilds every step's view from the trace the page holds once.

The page carries the object graph of the kernel before the first step and, per step, only what
the step changed (nodes added or changed, with only their changed attributes; nodes removed; edges
added and removed; the host's counters that moved), and the step's explanation as data whose
rules' citations and texts are kept once for the whole page. The script replays those deltas up
to the step shown (from a checkpoint every :data:`CHECKPOINT` steps) and draws from the result
what :mod:`sim.report.page` used to write for every step: the explanation, the kernel's tables and
the object graph, laid out as :func:`sim.graph.layout_svg` lays it out (ranks, barycentre
ordering, process bands, curved edges).
"""

from __future__ import annotations

CHECKPOINT = 64

JS = r"""
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('data').textContent);
  D.steps = unpack(D.steps, D.S);
  D.wire = unpack(D.wire, D.S);
  D.tracks = unpack(D.tracks, D.S);
  ladder(D.wire);
  var n = D.steps.length, cur = 0, chosen = null;
  var slider = document.getElementById('step-slider');
  var rows = timeline();
  var select = document.getElementById('conn-select');
  var segs = Array.prototype.slice.call(document.querySelectorAll('#ladder g.seg, #ladder g.state'));

  // ------------------------------------------------------------------ packed strings, the wire
  function unpack(x, T) {  // sim.report.page.unpack_strings: "@12" is T[12], "@@x" is "@x"
    if (typeof x === 'string') {
      if (x.charAt(0) !== '@') return x;
      return x.charAt(1) === '@' ? x.slice(1) : T[+x.slice(1)];
    }
    if (Array.isArray(x)) return x.map(function (y) { return unpack(y, T); });
    if (x && typeof x === 'object') {
      var o = {};
      Object.keys(x).forEach(function (k) { o[unpack(k, T)] = unpack(x[k], T); });
      return o;
    }
    return x;
  }
  function ladder(W) {  // the segments as a ladder diagram (sim.report.ladder.ladder_data)
    var box = document.getElementById('ladder');
    if (!box) return;
    if (!W || !W.segs.length) { box.innerHTML = '<p class="empty">No segment was put on the wire.</p>'; return; }
    var ROW = 30, COL = 290, MARGIN = 64, TOP = 44, SW = 84, FONT = 11, half = ROW / 2;
    var xs = W.eps.map(function (ep, i) { return MARGIN + SW / 2 + 40 + i * COL; });
    var width = MARGIN + SW + 80 + (W.eps.length - 1) * COL, height = TOP + (W.segs.length + 1) * ROW + 10;
    var p = ['<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="' + width + '" height="' + height +
             '" viewBox="0 0 ' + width + ' ' + height + '" font-family="ui-monospace, Menlo, Consolas, monospace" ' +
             'font-size="' + FONT + '" role="img" aria-label="segments on the wire">',
             '<defs><marker id="ladder-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" ' +
             'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>'];
    W.eps.forEach(function (ep, i) {
      p.push('<text class="ep" x="' + xs[i] + '" y="16" text-anchor="middle" font-weight="bold">' + E(ep) + '</text>');
      p.push('<line class="life" x1="' + xs[i] + '" y1="24" x2="' + xs[i] + '" y2="' + (height - 6) +
             '" stroke="#9aa5b1" stroke-dasharray="4 3"/>');
    });
    var shown = {}, lastRec = null;
    W.segs.forEach(function (s, i) {
      var rec = s[0], src = s[2], dst = s[3], label = s[4], opts = s[5], flags = label.split(' ')[0];
      var y = TOP + i * ROW + half, x1 = xs[src], x2 = xs[dst], st = D.steps[rec];
      var title = st ? 'step ' + rec + ': ' + (st.e.p ? st.e.p + ': ' : '') + st.e.w + ' \u2192 ' + st.e.o : 'step ' + rec;
      p.push('<g class="seg" data-step="' + rec + '" data-conn="' + s[1] + '">');
      p.push('<title>' + E(title) + ': ' + E(W.eps[src]) + ' \u2192 ' + E(W.eps[dst]) + ' ' + E(label) +
             (opts ? E(' <' + opts + '>') : '') + '</title>');
      if (rec !== lastRec) {
        p.push('<text class="stepno" x="6" y="' + (y + 4) + '">#' + rec + '</text>');
        p.push('<line x1="2" y1="' + (y - half) + '" x2="' + (width - 2) + '" y2="' + (y - half) + '" stroke="#e3e8ee"/>');
        lastRec = rec;
      }
      var fl = flags.split('|'), color = fl.indexOf('RST') >= 0 ? '#d62728' :
        (fl.indexOf('SYN') >= 0 || fl.indexOf('FIN') >= 0 ? '#1f5fa8' : '#2b3a4a');
      var lx, anchor;
      if (x1 === x2) {  // a socket connected to itself: a loop on its lifeline
        p.push('<path d="M' + x1 + ',' + (y - 6) + ' h40 v12 h-38" fill="none" stroke="' + color +
               '" stroke-width="1.6" marker-end="url(#ladder-arrow)"/>');
        lx = x1 + 46; anchor = 'start';
      } else {
        p.push('<line x1="' + x1 + '" y1="' + y + '" x2="' + x2 + '" y2="' + y + '" stroke="' + color +
               '" stroke-width="1.6" marker-end="url(#ladder-arrow)"/>');
        lx = Math.floor((x1 + x2) / 2); anchor = 'middle';
      }
      p.push('<text class="lbl" x="' + lx + '" y="' + (y - 4) + '" text-anchor="' + anchor + '" fill="' + color + '">' +
             E(label) + '</text>');
      if (opts) p.push('<text class="opt" x="' + lx + '" y="' + (y + 11) + '" text-anchor="' + anchor +
                       '" fill="#5b6675" font-size="' + (FONT - 2) + '">' + E('<' + opts + '>') + '</text>');
      p.push('</g>');
      [[src, s[6]], [dst, s[7]]].forEach(function (side) {  // a state box where a side's state changed
        var ep = side[0], state = side[1];
        if (!state || shown[ep] === state) return;
        shown[ep] = state;
        p.push('<g class="state" data-step="' + rec + '"><rect x="' + (xs[ep] - SW / 2) + '" y="' + (y + 2) +
               '" width="' + SW + '" height="14" rx="3" fill="#fff3bf" stroke="#c9a400"/><text x="' + xs[ep] +
               '" y="' + (y + 13) + '" text-anchor="middle" font-size="' + (FONT - 2) + '">' + E(state) + '</text></g>');
      });
    });
    p.push('</svg>');
    box.innerHTML = p.join('');
  }

  // ------------------------------------------------------------------ text helpers
  function E(s) {
    return String(s == null ? '' : s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;').replace(/'/g, '&#x27;');
  }
  function inline(s) { return E(s).replace(/`([^`]+)`/g, '<code>$1</code>'); }
  function fmtG(x, p) {  // Python's format(x, '.{p}g')
    p = p || 6; x = +x;
    if (!isFinite(x)) return String(x);
    if (x === 0) return '0';
    var parts = x.toExponential(p - 1).split('e'), exp = +parts[1];
    if (exp < -4 || exp >= p) {
      var mant = parts[0].indexOf('.') >= 0 ? parts[0].replace(/0+$/, '').replace(/\.$/, '') : parts[0];
      return mant + 'e' + (exp < 0 ? '-' : '+') + (Math.abs(exp) < 10 ? '0' : '') + Math.abs(exp);
    }
    var s = x.toFixed(Math.max(0, p - 1 - exp));
    return s.indexOf('.') >= 0 ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
  }
  function addr(a, p) { if (a == null) return '*'; a = String(a); return a.indexOf(':') >= 0 ? '[' + a + ']:' + p : a + ':' + p; }
  function upper(s) { return String(s).toUpperCase(); }

  // ------------------------------------------------------------------ the timeline, one row per step
  function timeline() {
    var body = document.querySelector('#timeline tbody'), html = [];
    D.steps.forEach(function (s) {
      var e = s.e, o = e.o;
      var cls = /^(-1 |INVALID_SOCKET|SOCKET_ERROR)/.test(o) || o.indexOf('PROCESS_') >= 0 ? 'err' : /^(BLOCKED|blocked)/.test(o) ? 'blocked' : '';
      var mark = !('xo' in e) ? '' : e.xo ? '<span class="good">&#10003;</span>' : '<span class="bad">&#10007;</span>';
      html.push('<tr data-step="' + e.i + '" class="' + cls + '"><td class="num">' + e.i + '</td><td class="num">' + fmtG(e.t) +
        '</td><td>' + E(e.p || '') + '</td><td>' + (e.v ? '<div class="via">' + E(e.v) + '</div>' : '') + '<code>' + E(e.w) +
        '</code></td><td class="res">' + E(o) + ' ' + mark + '</td><td class="rule">' + E(e.r || e.db) + '</td></tr>');
    });
    body.innerHTML = html.join('');
    return Array.prototype.slice.call(body.querySelectorAll('tr'));
  }

  // ------------------------------------------------------------------ the graph, rebuilt
  function Graph() { this.nodes = new Map(); this.succ = new Map(); this.pred = new Map(); this.attrs = {}; }
  Graph.prototype.clone = function () {
    var g = new Graph();
    this.nodes.forEach(function (d, k) { g.nodes.set(k, Object.assign({}, d)); });
    this.succ.forEach(function (m, k) { g.succ.set(k, new Map(m)); });
    this.pred.forEach(function (m, k) { g.pred.set(k, new Map(m)); });
    g.attrs = JSON.parse(JSON.stringify(this.attrs));
    return g;
  };
  Graph.prototype.removeNode = function (k) {
    var self = this;
    (this.succ.get(k) || new Map()).forEach(function (_, b) { self.pred.get(b).delete(k); });
    (this.pred.get(k) || new Map()).forEach(function (_, a) { self.succ.get(a).delete(k); });
    this.nodes.delete(k); this.succ.delete(k); this.pred.delete(k);
  };
  Graph.prototype.ensure = function (k) {
    if (!this.nodes.has(k)) { this.nodes.set(k, {}); this.succ.set(k, new Map()); this.pred.set(k, new Map()); }
  };
  Graph.prototype.apply = function (d) {
    var self = this, changed = new Set();
    (d.nr || []).forEach(function (k) { self.removeNode(k); });
    (d.er || []).forEach(function (e) {
      if (self.succ.has(e[0])) { self.succ.get(e[0]).delete(e[1]); changed.add(e[0]); }
      if (self.pred.has(e[1])) self.pred.get(e[1]).delete(e[0]);
    });
    Object.keys(d.n || {}).forEach(function (k) {
      self.ensure(k);
      var node = self.nodes.get(k), upd = d.n[k];
      Object.keys(upd).forEach(function (a) { if (upd[a] === null) delete node[a]; else node[a] = upd[a]; });
      changed.add(k);
    });
    (d.ea || []).forEach(function (e) {
      self.ensure(e[0]); self.ensure(e[1]);
      self.succ.get(e[0]).set(e[1], {rel: e[2]}); self.pred.get(e[1]).set(e[0], {rel: e[2]});
      changed.add(e[0]);
    });
    Object.keys(d.g || {}).forEach(function (a) { self.attrs[a] = d.g[a]; });
    return changed;
  };
  var base = new Graph();
  base.apply(D.base);
  var checkpoints = {0: base};  // step k (a multiple of D.every) -> the graph before step k
  function graphAfter(i) {  // the object graph after step i, and what step i changed
    var k = i - (i % D.every), j = k;
    while (!checkpoints[j]) j -= D.every;
    var g = checkpoints[j].clone();
    for (var s = j; s < k; s++) {
      g.apply(D.steps[s].d);
      if ((s + 1) % D.every === 0) checkpoints[s + 1] = g.clone();
    }
    if (g === checkpoints[k]) g = g.clone();
    var changed = new Set();
    for (var t = k; t <= i; t++) changed = g.apply(D.steps[t].d);
    return {g: g, changed: changed};
  }

  // ------------------------------------------------------------------ node texts (sim.graph.node_lines)
  function flags(d) {
    var f = [];
    if (d.reuse) f.push('SO_REUSEADDR');
    if (d.reuseport) f.push('SO_REUSEPORT');
    return f.length ? f.join(', ') : 'no SO_REUSEADDR';
  }
  function nodeLines(id, d) {
    var k = d.kind, l;
    if (k === 'process') return ['process ' + d.name, 'pid ' + d.pid + (!d.alive ? ', exited' : ', RLIMIT_NOFILE ' + d.nofile)];
    if (k === 'std') { var f = d.fds; return [f.length > 1 ? 'fd ' + f[0] + '-' + f[f.length - 1] : 'fd ' + f[0], 'stdin/stdout/stderr']; }
    if (k === 'fd') return ['fd ' + d.fd + (d.name ? ' (' + d.name + ')' : '')];
    if (k === 'file') {
      var refs = d.refs == null ? 1 : d.refs;
      l = ['open file', refs + ' reference' + (refs !== 1 ? 's' : '')];
      if (d.nonblock) l.push('O_NONBLOCK');
      return l;
    }
    if (k === 'tcb') {
      var head = d.proto === 'tcp' ? upper(d.proto) + ' ' + d.state : upper(d.proto) + ' socket';
      if (d.request) head = 'request ' + d.state;
      l = [head];
      if (d.raddr) l.push(addr(d.laddr, d.lport) + ' \u2194 ' + addr(d.raddr, d.rport));
      else if (d.lport) l.push('bound ' + addr(d.laddr, d.lport));
      else l.push('not bound');
      if (d.state === 'LISTEN') l.push('backlog ' + d.backlog);
      l.push(flags(d));
      if (d.orphan) l.push('orphan: no fd refers to it');
      if (d.err) l.push('pending error ' + d.err);
      return l;
    }
    if (k === 'buffer') return [d.dir + ' buffer', d.bytes + ' B queued', 'SO_' + (d.dir === 'send' ? 'SND' : 'RCV') + 'BUF ' + d.size];
    if (k === 'acceptq') return ['accept queue', d.queued + ' queued, full above ' + d.backlog];
    if (k === 'port') return [upper(d.proto) + ' port ' + d.port, d.owners + ' owner' + (d.owners !== 1 ? 's' : '')];
    if (k === 'timewait') {
      l = [d.state + ' entry', addr(d.laddr, d.lport) + ' \u2192 ' + addr(d.raddr, d.rport), 'expires t=' + (+d.expires).toFixed(1) + ' s', flags(d)];
      if (d.origin) l.push('left by ' + d.origin);
      return l;
    }
    if (k === 'pool') {
      l = [(d.name || 'TCP memory') + ' (never paged out)', d.bytes + ' B = ' + d.pages + ' page' + (d.pages !== 1 ? 's' : '')];
      if (d.pressure) l.push('MEMORY PRESSURE');
      return l;
    }
    if (k === 'more') return ['... ' + d.count + ' more ' + d.what];
    return [id];
  }

  // ------------------------------------------------------------------ the drawing (sim.graph.object_drawing)
  var RANK = {process: 0, std: 1, fd: 1, file: 2, tcb: 3, timewait: 3, more: 3, buffer: 4, acceptq: 4, port: 5, pool: 5};
  function drawing(g, changed) {
    var dr = {nodes: [], edges: [], clusters: new Map()};
    g.nodes.forEach(function (d, id) {
      var k = d.kind, fill = '#ffffff', color = '#555555', style = '', shape = 'box';
      if (k === 'process') {
        fill = d.alive ? '#cfe3f7' : '#e6e6e6'; style = d.alive ? '' : 'dashed';
        dr.clusters.set(d.cluster, 'process ' + d.name + (d.alive ? '' : ' (exited)'));
      } else if (k === 'fd' || k === 'std') fill = k === 'fd' ? '#eef5fc' : '#f6f6f6';
      else if (k === 'file') fill = '#fdf6e3';
      else if (k === 'tcb') { fill = D.fill[d.state] || '#eeeeee'; if (d.orphan) style = 'dashed'; }
      else if (k === 'buffer') { fill = d.bytes ? '#ede7f6' : '#f7f5fb'; shape = 'note'; }
      else if (k === 'acceptq') { fill = '#e8f5e9'; shape = 'note'; }
      else if (k === 'port') { fill = '#fff7c0'; shape = 'ellipse'; }
      else if (k === 'timewait') { fill = d.state === 'TIME_WAIT' ? D.fill.TIME_WAIT : D.fill.FIN_WAIT2; style = 'dashed'; }
      else if (k === 'pool') fill = '#e1d5f5';
      var node = {id: id, lines: nodeLines(id, d), fill: fill, color: color, shape: shape, style: style, pen: 1,
                  rank: RANK[k] == null ? 3 : RANK[k], cluster: d.cluster || null, cls: 'k-' + k};
      if (changed.has(id)) { node.color = '#d62728'; node.pen = 3; node.cls += ' changed'; }
      dr.nodes.push(node);
    });
    g.succ.forEach(function (m, a) {
      m.forEach(function (ed, b) {
        var rel = ed.rel || '';
        var color = {'owns': '#b8860b', 'charged to': '#7e57c2', 'queued': '#2e7d32'}[rel] || '#666666';
        dr.edges.push({src: a, dst: b, label: rel === 'fd table' || rel === 'refers to' ? '' : rel, color: color,
                       style: rel === 'charged to' || rel === 'SYN_RECV request' ? 'dashed' : ''});
      });
    });
    return dr;
  }
  var CHAR_W = 6.4, LINE_H = 14.0, PAD = 8.0;
  function size(nd) {
    var w = Math.max.apply(null, nd.lines.map(function (s) { return s.length; })) * CHAR_W + 2 * PAD + (nd.shape === 'ellipse' ? 10 : 0);
    return [Math.max(w, 40), Math.max(nd.lines.length * LINE_H + 2 * PAD - 4, 24)];
  }
  function order(dr) {
    var ranks = {}, nbrs = {}, rankOf = {}, pos = {}, clusters = [];
    dr.nodes.forEach(function (nd) { (ranks[nd.rank] = ranks[nd.rank] || []).push(nd); nbrs[nd.id] = []; rankOf[nd.id] = nd.rank;
      if (nd.cluster && clusters.indexOf(nd.cluster) < 0) clusters.push(nd.cluster); });
    dr.edges.forEach(function (e) { if (nbrs[e.src] && nbrs[e.dst] && e.src !== e.dst) { nbrs[e.src].push(e.dst); nbrs[e.dst].push(e.src); } });
    var keys = Object.keys(ranks).map(Number).sort(function (a, b) { return a - b; });
    keys.forEach(function (r) { ranks[r].forEach(function (nd, i) { pos[nd.id] = i; }); });
    for (var sweep = 0; sweep < 8; sweep++) {
      var seq = sweep % 2 === 0 ? keys : keys.slice().reverse();
      seq.forEach(function (r) {
        var key = {};
        ranks[r].forEach(function (nd, i) {
          var adj = nbrs[nd.id].filter(function (m) { return rankOf[m] !== r; }).map(function (m) { return pos[m]; });
          key[nd.id] = [nd.cluster ? clusters.indexOf(nd.cluster) : clusters.length,
                        adj.length ? adj.reduce(function (a, b) { return a + b; }, 0) / adj.length : pos[nd.id], i];
        });
        ranks[r].sort(function (a, b) { var x = key[a.id], y = key[b.id]; return x[0] - y[0] || x[1] - y[1] || x[2] - y[2]; });
        ranks[r].forEach(function (nd, i) { pos[nd.id] = i; });
      });
    }
    return {ranks: ranks, keys: keys};
  }
  function f1(x) { return (+x).toFixed(1); }
  function svgEdge(e, a, b) {
    var ax = a[0], ay = a[1], aw = a[2], ah = a[3], bx = b[0], by = b[1], bw = b[2], bh = b[3];
    var dash = e.style === 'dashed' ? ' stroke-dasharray="5 3"' : '', sx, sy, tx, ty, c1, c2;
    if (e.src === e.dst) { sx = ax + aw * 0.35; sy = ay; tx = ax + aw * 0.65; ty = ay; c1 = [sx - 10, sy - 34]; c2 = [tx + 10, ty - 34]; }
    else {
      var acx = ax + aw / 2, acy = ay + ah / 2, bcx = bx + bw / 2, bcy = by + bh / 2, fwd = bcx > acx + 1;
      if (Math.abs(bcx - acx) < 1) { sx = ax + aw; sy = acy; tx = bx + bw; ty = bcy; c1 = [sx + 50, sy]; c2 = [tx + 50, ty]; }
      else {
        sx = fwd ? ax + aw : ax; sy = acy; tx = fwd ? bx : bx + bw; ty = bcy;
        var d = Math.max(30, Math.abs(tx - sx) * 0.4);
        c1 = [sx + (fwd ? d : -d), sy]; c2 = [tx - (fwd ? d : -d), ty];
      }
    }
    var path = 'M' + f1(sx) + ',' + f1(sy) + ' C' + f1(c1[0]) + ',' + f1(c1[1]) + ' ' + f1(c2[0]) + ',' + f1(c2[1]) + ' ' + f1(tx) + ',' + f1(ty);
    var dx = tx - c2[0], dy = ty - c2[1], ln = Math.hypot(dx, dy) || 1, ux = dx / ln, uy = dy / ln, sz = 7;
    var p1 = [tx - ux * sz - uy * sz * 0.45, ty - uy * sz + ux * sz * 0.45], p2 = [tx - ux * sz + uy * sz * 0.45, ty - uy * sz - ux * sz * 0.45];
    var head = '<polygon points="' + f1(tx) + ',' + f1(ty) + ' ' + f1(p1[0]) + ',' + f1(p1[1]) + ' ' + f1(p2[0]) + ',' + f1(p2[1]) +
      '" fill="' + e.color + '" stroke="' + e.color + '"/>', label = '';
    if (e.label) {
      var t = 0.5, mx = Math.pow(1 - t, 3) * sx + 3 * Math.pow(1 - t, 2) * t * c1[0] + 3 * (1 - t) * t * t * c2[0] + t * t * t * tx;
      var my = Math.pow(1 - t, 3) * sy + 3 * Math.pow(1 - t, 2) * t * c1[1] + 3 * (1 - t) * t * t * c2[1] + t * t * t * ty;
      var lines = e.label.split('\n'), lw = Math.max.apply(null, lines.map(function (s) { return s.length; })) * 5.2 + 4, lh = lines.length * 10 + 2;
      label = '<rect x="' + f1(mx - lw / 2) + '" y="' + f1(my - lh / 2) + '" width="' + f1(lw) + '" height="' + f1(lh) + '" fill="white" fill-opacity="0.85"/>';
      lines.forEach(function (s, i) {
        label += '<text x="' + f1(mx) + '" y="' + f1(my - lh / 2 + 9 + i * 10) + '" text-anchor="middle" font-size="8" fill="' + e.color + '">' + E(s) + '</text>';
      });
    }
    return '<g class="edge"><path d="' + path + '" fill="none" stroke="' + e.color + '" stroke-width="1"' + dash + '/>' + head + label + '</g>';
  }
  function layoutSvg(dr) {  // sim.graph.layout_svg, left to right
    if (!dr.nodes.length) return '';
    var o = order(dr), ranks = o.ranks, keys = o.keys, sz = {}, thick = {}, along = {}, across = {}, cur = 20;
    dr.nodes.forEach(function (nd) { sz[nd.id] = size(nd); });
    keys.forEach(function (r) { thick[r] = Math.max.apply(null, ranks[r].map(function (nd) { return sz[nd.id][0]; })); along[r] = cur; cur += thick[r] + 70; });
    var multi = new Set();
    dr.clusters.forEach(function (_, c) {
      var rs = new Set(); dr.nodes.forEach(function (nd) { if (nd.cluster === c) rs.add(nd.rank); });
      if (rs.size > 1) multi.add(c);
    });
    var bandEnd = 20;
    dr.clusters.forEach(function (_, c) {
      if (!multi.has(c)) return;
      var top = bandEnd + 18, ext = 0;
      keys.forEach(function (r) {
        var y = top;
        ranks[r].forEach(function (nd) { if (nd.cluster === c) { across[nd.id] = y; y += sz[nd.id][1] + 16; } });
        ext = Math.max(ext, y - top);
      });
      bandEnd = top + ext + 10;
    });
    var spans = {}, widthAcross = bandEnd;
    keys.forEach(function (r) {
      var free = ranks[r].filter(function (nd) { return !(nd.id in across); });
      var total = free.reduce(function (a, nd) { return a + sz[nd.id][1]; }, 0) + 16 * Math.max(0, free.length - 1);
      spans[r] = [free, total]; widthAcross = Math.max(widthAcross, total + 40);
    });
    keys.forEach(function (r) {
      var free = spans[r][0], total = spans[r][1];
      var banded = ranks[r].some(function (nd) { return nd.id in across; });
      var y = banded ? bandEnd + 10 : Math.max(20, (widthAcross - total) / 2);
      free.forEach(function (nd) { across[nd.id] = y; y += sz[nd.id][1] + 16; });
    });
    var box = {}, W = 0, H = 0;
    keys.forEach(function (r) {
      ranks[r].forEach(function (nd) {
        var w = sz[nd.id][0], h = sz[nd.id][1], x = along[r] + (thick[r] - w) / 2, y = across[nd.id];
        box[nd.id] = [x, y, w, h]; W = Math.max(W, x + w); H = Math.max(H, y + h);
      });
    });
    W += 40; H += 40;
    var parts = [];
    dr.clusters.forEach(function (label, c) {
      var m = dr.nodes.filter(function (nd) { return nd.cluster === c; }).map(function (nd) { return box[nd.id]; });
      if (!m.length) return;
      var x0 = Math.min.apply(null, m.map(function (b) { return b[0]; })) - 8, y0 = Math.min.apply(null, m.map(function (b) { return b[1]; })) - 18;
      var x1 = Math.max.apply(null, m.map(function (b) { return b[0] + b[2]; })) + 8, y1 = Math.max.apply(null, m.map(function (b) { return b[1] + b[3]; })) + 8;
      parts.push('<g class="cluster"><rect x="' + f1(x0) + '" y="' + f1(y0) + '" width="' + f1(x1 - x0) + '" height="' + f1(y1 - y0) +
        '" rx="6" fill="none" stroke="#7aa6d6" stroke-dasharray="4 3"/><text x="' + f1(x0 + 6) + '" y="' + f1(y0 + 12) +
        '" font-size="10" fill="#335">' + E(label) + '</text></g>');
    });
    dr.edges.forEach(function (e) { if (box[e.src] && box[e.dst]) parts.push(svgEdge(e, box[e.src], box[e.dst])); });
    dr.nodes.forEach(function (nd) {
      var b = box[nd.id], x = b[0], y = b[1], w = b[2], h = b[3], dash = nd.style.indexOf('dashed') >= 0 ? ' stroke-dasharray="5 3"' : '', shape;
      if (nd.shape === 'ellipse') shape = '<ellipse cx="' + f1(x + w / 2) + '" cy="' + f1(y + h / 2) + '" rx="' + f1(w / 2) + '" ry="' + f1(h / 2) +
        '" fill="' + nd.fill + '" stroke="' + nd.color + '" stroke-width="' + nd.pen + '"' + dash + '/>';
      else shape = '<polygon points="' + f1(x) + ',' + f1(y) + ' ' + f1(x + w) + ',' + f1(y) + ' ' + f1(x + w) + ',' + f1(y + h) + ' ' + f1(x) + ',' + f1(y + h) +
        '" fill="' + nd.fill + '" stroke="' + nd.color + '" stroke-width="' + nd.pen + '"' + dash + ' rx="' + (nd.shape === 'box' ? 6 : 1) + '"/>';
      var ty = y + (h - nd.lines.length * LINE_H) / 2 + LINE_H - 3, texts = '';
      nd.lines.forEach(function (line, i) {
        texts += '<text x="' + f1(x + w / 2) + '" y="' + f1(ty) + '" text-anchor="middle" font-size="10"' + (i === 0 ? ' font-weight="bold"' : '') + '>' + E(line) + '</text>';
        ty += LINE_H;
      });
      parts.push('<g id="' + E(nd.id) + '" class="node ' + E(nd.cls) + '"><title>' + E(nd.id) + '</title>' + shape + texts + '</g>');
    });
    return '<svg class="graph" data-engine="browser" xmlns="http://www.w3.org/2000/svg" width="' + W.toFixed(0) + 'pt" height="' + H.toFixed(0) +
      'pt" viewBox="0 0 ' + W.toFixed(0) + ' ' + H.toFixed(0) + '" font-family="Helvetica,Arial,sans-serif"><rect width="100%" height="100%" fill="white"/>' +
      parts.join('') + '</svg>';
  }

  // ------------------------------------------------------------------ tables (the kernel's tables after the step)
  function table(head, rows, empty) {
    if (!rows.length) return '<p class="empty">' + E(empty) + '</p>';
    return '<table><thead><tr>' + head.map(function (h) { return '<th>' + E(h) + '</th>'; }).join('') + '</tr></thead><tbody>' +
      rows.map(function (r) { return '<tr>' + r.map(function (c) { return '<td>' + c + '</td>'; }).join('') + '</tr>'; }).join('') + '</tbody></table>';
  }
  function succOf(g, k) { return Array.from((g.succ.get(k) || new Map()).keys()); }
  function predOf(g, k) { return Array.from((g.pred.get(k) || new Map()).keys()); }
  function holders(g, t) {
    var out = [];
    predOf(g, t).forEach(function (f) { if ((g.nodes.get(f) || {}).kind === 'file') (g.nodes.get(f).holders || []).forEach(function (h) { out.push(h); }); });
    return out;
  }
  function alive(g, proc) { var d = g.nodes.get('proc:' + proc); return d ? !!d.alive : true; }
  function tables(g, now) {
    var out = [], rows = [];
    g.nodes.forEach(function (d, id) {
      if (d.kind !== 'process') return;
      var fds = succOf(g, id).filter(function (m) { var k = g.nodes.get(m).kind; return k === 'fd' || k === 'std'; });
      var state = !d.alive ? 'exited' : 'pid ' + d.pid;
      if (!fds.length) rows.push([E(d.name), E(state), '', '<i>no open fds</i>', '']);
      fds.sort(function (a, b) { var x = g.nodes.get(a), y = g.nodes.get(b);
        return (x.kind === 'fd' ? (x.fd == null ? -1 : x.fd) : -1) - (y.kind === 'fd' ? (y.fd == null ? -1 : y.fd) : -1); });
      fds.forEach(function (m) {
        var f = g.nodes.get(m);
        if (f.kind === 'std') { rows.push([E(d.name), E(state), E(f.fds.join(', ')), 'stdin/stdout/stderr', '']); return; }
        var fdesc = '', sdesc = '';
        succOf(g, m).filter(function (x) { return g.nodes.get(x).kind === 'file'; }).forEach(function (fl) {
          var fa = g.nodes.get(fl);
          var others = (fa.holders || []).filter(function (h) { return h !== d.name + ':' + f.fd; }).map(function (h) { return h.replace(':', ' fd '); });
          fdesc = 'open file #' + E(fl.slice(4)) + ': ' + fa.refs + ' ref' + (fa.refs !== 1 ? 's' : '') +
            (others.length ? ' (shared with ' + E(others.join(', ')) + ')' : '') + (fa.nonblock ? ', O_NONBLOCK' : '');
          succOf(g, fl).forEach(function (t) {
            var td = g.nodes.get(t);
            sdesc = E(upper(td.proto) + ' ' + (td.proto === 'tcp' ? td.state : '') + ' ' + (td.lport ? addr(td.laddr, td.lport) : 'unbound'));
          });
        });
        rows.push([E(d.name), E(state), String(f.fd) + (f.name ? ' (' + E(f.name) + ')' : ''), fdesc, sdesc]);
      });
    });
    out.push('<h3>File descriptor tables</h3>' + table(['process', '', 'fd', 'open file', 'socket'], rows, 'no processes'));
    rows = [];
    g.nodes.forEach(function (d, id) {
      if (d.kind !== 'tcb') return;
      var fl = []; if (d.reuse) fl.push('SO_REUSEADDR'); if (d.reuseport) fl.push('SO_REUSEPORT');
      var owner = holders(g, id).map(function (h) { return h.replace(':', ' fd '); }).join(', ') || (d.orphan ? 'orphan' : d.request ? 'request' : '-');
      rows.push([E(d.label || id), E(d.proto === 'tcp' ? d.state : upper(d.proto)), E(d.lport ? addr(d.laddr, d.lport) : '-'),
                 E(d.raddr ? addr(d.raddr, d.rport) : '-'), String(d.rcv_q), String(d.snd_q), E(fl.join(', ') || '-'), E(owner)]);
    });
    out.push('<h3>Sockets (TCBs)</h3>' + table(['socket', 'state', 'local', 'remote', 'Recv-Q', 'Send-Q', 'options', 'fds'], rows, 'no sockets'));
    rows = [];
    g.nodes.forEach(function (d, id) {
      if (d.kind !== 'port') return;
      var owners = predOf(g, id).map(function (o) {
        var od = g.nodes.get(o);
        return od.kind === 'timewait' ? od.state + ' entry ' + addr(od.raddr, od.rport) : (od.label || o) + ' (' + od.state + ')';
      });
      rows.push([upper(d.proto) + ' ' + d.port, E(owners.join('; '))]);
    });
    out.push('<h3>Port table (bind buckets)</h3>' + table(['port', 'owners'], rows, 'no port is in use'));
    rows = [];
    g.nodes.forEach(function (d) {
      if (d.kind !== 'timewait') return;
      rows.push([E(addr(d.laddr, d.lport) + ' \u2192 ' + addr(d.raddr, d.rport)), E(d.state), fmtG(d.expires), fmtG(Math.max(0, d.expires - now)),
                 d.reuse ? 'yes' : 'no', E(d.origin || '-') + (d.origin_proc == null || alive(g, d.origin_proc) ? '' : E(' (process ' + d.origin_proc + ' exited)'))]);
    });
    out.push('<h3>TIME_WAIT entries</h3>' + table(['4-tuple', 'state', 'expires at (s)', 'remaining (s)', 'SO_REUSEADDR', 'left by'], rows, 'none'));
    rows = [];
    g.nodes.forEach(function (d, id) {
      if (d.kind !== 'acceptq') return;
      var lst = predOf(g, id)[0];
      rows.push([lst ? E((g.nodes.get(lst) || {}).label || lst) : '', String(d.queued), String(d.backlog), String(d.limit), String(d.overflows)]);
    });
    out.push('<h3>Accept queues</h3>' + table(['listener', 'queued', 'backlog', 'holds at most', 'SYNs dropped'], rows, 'no listener'));
    var pool = g.nodes.get('pool'), ss = g.attrs.sockstat || {}, mem = [];
    if (pool && pool.tcp_mem.length === 3) {
      mem.push('TCP memory in use: <b>' + pool.bytes + ' B</b> (' + pool.pages + ' pages; peak ' + pool.peak + ' B). It is kernel memory that is never paged out; tcp_mem = ' +
        pool.tcp_mem[0] + ' / ' + pool.tcp_mem[1] + ' / ' + pool.tcp_mem[2] + ' pages (no pressure / pressure / hard limit)' +
        (pool.pressure ? ' &mdash; <b>under pressure</b>' : '') + '.');
    } else if (pool) {
      mem.push(E(pool.name || 'kernel memory') + ' in use: <b>' + pool.bytes + ' B</b> (peak ' + pool.peak + ' B) of a limit of ' + pool.tcp_mem[0] +
        ' B; kernel memory that is never paged out.');
    }
    var sk = Object.keys(ss);
    if (sk.length) mem.push('/proc/net/sockstat TCP: ' + E(sk.map(function (k) { return k + ' ' + ss[k]; }).join(' ')));
    var mib = g.attrs.mib || {}, mk = Object.keys(mib).sort();
    if (mk.length) mem.push('counters: ' + E(mk.map(function (k) { return k + ' ' + mib[k]; }).join(' ')));
    out.push('<h3>Memory and counters</h3>' + mem.map(function (m) { return '<p>' + m + '</p>'; }).join(''));
    return out.join('\n');
  }

  // ------------------------------------------------------------------ the explanation of a step
  function ruleOf(x) { return typeof x === 'string' ? [x, (D.rules[x] || {}).c || ''] : x; }
  function explain(e) {
    var err = /^(-1 |INVALID_SOCKET|SOCKET_ERROR)/.test(e.o) || e.o.indexOf('PROCESS_') >= 0;
    var parts = ['<h2>Step ' + e.i + ' <span class="when">t = ' + fmtG(e.t) + ' s' + (e.l ? ', line ' + e.l : '') + '</span></h2>'];
    parts.push('<p class="call">' + (e.p ? '<span class="proc">' + E(e.p) + '</span> ' : '') + '<code>' + E(e.w) + '</code> &rarr; ' +
      '<b class="outcome' + (err ? ' err' : '') + '">' + E(e.o) + '</b></p>');
    if (e.v) parts.push('<p class="via">called by the slot of a timer: ' + E(e.v) + '</p>');
    if ('x' in e) parts.push('<p class="expect ' + (e.xo ? 'good' : 'bad') + '">expected ' + E(e.x) + ': ' + (e.xo ? 'met' : 'NOT met') + '</p>');
    if (e.n) parts.push('<p class="note">' + inline(e.n) + '</p>');
    var rid = e.r || e.db || '', reg = D.rules[e.r] || {};
    var cite = 'c' in e ? e.c : (reg.c || ''), doc = 'doc' in e ? e.doc : (reg.d || '');
    parts.push('<div class="decision"><div>decided by <b class="rule">' + E(rid) + '</b></div><div class="cite">' + E(cite) + '</div>');
    var more = [];
    if (doc && doc.trim().split('\n').length > 1) more.push('<pre class="doc">' + E(doc.trim()) + '</pre>');
    var trail = (e.tr || []).map(ruleOf);
    if (trail.length > 1) more.push('<p>rules consulted, in order:</p><ul class="trail">' + trail.map(function (t) {
      return '<li><b>' + E(t[0]) + '</b> <span class="cite2">' + E(t[1]) + '</span></li>'; }).join('') + '</ul>');
    if (more.length) parts.push('<details><summary>the rule\'s text and every rule consulted</summary>' + more.join('') + '</details>');
    parts.push('</div>');
    function ul(title, items, cls) {
      if (items && items.length) parts.push('<h3>' + title + '</h3><ul class="' + cls + '">' + items.map(function (x) { return '<li>' + inline(x) + '</li>'; }).join('') + '</ul>');
    }
    ul('What the rule looked at', e.f, 'facts');
    ul('The kernel\'s tables just before the step', e.s, 'state');
    ul('During the step', e.du, 'during');
    if (e.ef) parts.push('<p class="effect">afterwards: ' + E(e.ef) + '</p>');
    var wi = e.wi || [], ch = wi.filter(function (w) { return w[2]; }), same = wi.filter(function (w) { return !w[2]; });
    if (ch.length) parts.push('<h3>What would have changed the outcome</h3><p class="hint">each variant of the scenario was re-run on the model</p>' +
      '<ul class="whatif changed">' + ch.map(function (w) { return '<li>' + E(w[0]) + ': <b>' + E(w[1]) + '</b></li>'; }).join('') + '</ul>');
    if (same.length) parts.push('<h3>What would not have changed it</h3><ul class="whatif same">' +
      same.map(function (w) { return '<li>' + E(w[0]) + ': still <b>' + E(w[1]) + '</b></li>'; }).join('') + '</ul>');
    return parts.join('\n');
  }
  function title(s) { var e = s.e; return 'step ' + e.i + ': ' + (e.p ? e.p + ': ' : '') + e.w + ' \u2192 ' + e.o; }

  // ------------------------------------------------------------------ the state diagram and the controls
  function highlight() {
    var svg = document.querySelector('#states svg');
    if (!svg) return;
    Array.prototype.forEach.call(svg.querySelectorAll('.hl, .cur'), function (el) {
      el.classList.remove('hl'); el.classList.remove('cur');
    });
    var tid = select.value, t = D.tracks[tid], text = [], last = null;
    if (!t) { document.getElementById('path-text').textContent = ''; return; }
    t.path.forEach(function (p) {  // [step, "src|event|dst", time]
      if (p[0] > cur) return;
      var mv = D.moves[p[1]], edge = mv[0], nodes = mv[1], sed = p[1].split('|');
      if (edge) { var e = svg.getElementById ? svg.getElementById(edge) : document.getElementById(edge);
        if (e) e.classList.add('hl'); }
      nodes.forEach(function (id) { var el = document.getElementById(id); if (el) el.classList.add('hl'); });
      text.push('step ' + p[0] + ': ' + sed[0] + ' --' + sed[1] + '--> ' + sed[2]);
      last = nodes;
    });
    if (last) { var ln = document.getElementById(last[last.length - 1]); if (ln) ln.classList.add('cur'); }
    document.getElementById('path-text').textContent = text.length ? text.join('   ') : 'no transition yet';
  }
  function show(i, fromUser) {
    if (!n) return;
    i = Math.max(0, Math.min(n - 1, i | 0));
    cur = i;
    var s = D.steps[i], view = graphAfter(i);
    slider.value = i;
    document.getElementById('step-label').textContent = title(s);
    document.getElementById('explanation').innerHTML = explain(s.e);
    document.getElementById('tables').innerHTML = tables(view.g, s.e.t);
    document.getElementById('graph').innerHTML = layoutSvg(drawing(view.g, view.changed));
    rows.forEach(function (r, k) {
      r.classList.toggle('current', k === i);
      r.classList.toggle('future', k > i);
    });
    if (rows[i] && fromUser !== 'row' && rows[i].scrollIntoView) rows[i].scrollIntoView({block: 'nearest'});
    var firstSeg = null;
    segs.forEach(function (g) {
      var k = +g.getAttribute('data-step');
      g.classList.toggle('cur', k === i);
      g.classList.toggle('future', k > i);
      if (k === i && !firstSeg && g.classList.contains('seg')) firstSeg = g;
    });
    var lb = document.getElementById('ladder');
    if (firstSeg && lb && firstSeg.getBBox) {
      var y = firstSeg.getBBox().y;
      if (y < lb.scrollTop || y > lb.scrollTop + lb.clientHeight - 40) lb.scrollTop = Math.max(0, y - 60);
    }
    if (!chosen && s.track && D.tracks[s.track]) select.value = s.track;
    highlight();
    if (history.replaceState) history.replaceState(null, '', '#step=' + i);
  }
  slider.addEventListener('input', function () { show(+slider.value, 'slider'); });
  slider.addEventListener('change', function () { show(+slider.value, 'slider'); });
  document.getElementById('prev').addEventListener('click', function () { show(cur - 1); });
  document.getElementById('next').addEventListener('click', function () { show(cur + 1); });
  rows.forEach(function (r) { r.addEventListener('click', function () { show(+r.getAttribute('data-step'), 'row'); }); });
  segs.forEach(function (g) {
    if (g.classList.contains('seg')) g.addEventListener('click', function () { show(+g.getAttribute('data-step'), 'wire'); });
  });
  select.addEventListener('change', function () { chosen = select.value; highlight(); });
  document.getElementById('graph').addEventListener('click', function () { this.classList.toggle('fit'); });
  document.addEventListener('keydown', function (ev) {
    if (ev.target && (ev.target.tagName === 'SELECT' || ev.target.tagName === 'INPUT' && ev.target.type !== 'range')) return;
    if (ev.key === 'ArrowRight' || ev.key === 'j') { show(cur + 1); ev.preventDefault(); }
    if (ev.key === 'ArrowLeft' || ev.key === 'k') { show(cur - 1); ev.preventDefault(); }
    if (ev.key === 'Home') { show(0); ev.preventDefault(); }
    if (ev.key === 'End') { show(n - 1); ev.preventDefault(); }
  });
  window.socksimShow = show;
  window.socksimView = function (i) { var v = graphAfter(i); return {tables: tables(v.g, D.steps[i].e.t), explain: explain(D.steps[i].e)}; };
  var m = /step=(\d+)/.exec(location.hash || '');
  show(m ? +m[1] : 0);
})();
"""
