// podswitch dashboard. Plain JavaScript, no build step: it follows the
// handler's server-sent events (api/events) and renders the overview, one
// app, and the timeline of a deployment. Every URL is relative, so the page
// works wherever it is mounted. Read-only: nothing here changes anything.
'use strict';
(function () {
  const view = document.getElementById('view');
  const liveEl = document.getElementById('live');
  let es = null, retryTimer = 0, retryDelay = 1000, skew = 0, route = {}, apps = null, appData = null, ticks = 0;

  const ESC = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'};
  const esc = s => String(s == null ? '' : s).replace(/[&<>"']/g, c => ESC[c]);
  // Go writes nanoseconds; Date.parse wants milliseconds at most.
  const ms = t => t ? Date.parse(String(t).replace(/(\.\d{3})\d+/, '$1')) : 0;
  const now = () => Date.now() + skew;
  // A container of one host of several is "host/<id>": its host stays.
  const short = id => {
    const s = String(id || ''), i = s.indexOf('/');
    return i < 0 ? s.slice(0, 12) : s.slice(0, i + 13);
  };
  // The short image ID a release runs, after its tag (none for a release
  // that runs by reference).
  const imgID = id => id ? ` <span class="mono muted" data-image-id="${esc(id)}">${esc(short(id))}</span>` : '';
  const enc = encodeURIComponent;

  function fmtDur(x) {
    if (!(x > 0)) x = 0;
    if (x < 1000) return Math.round(x) + ' ms';
    if (x < 10000) return (x / 1000).toFixed(2) + ' s';
    if (x < 60000) return (x / 1000).toFixed(1) + ' s';
    if (x < 3600000) return Math.floor(x / 60000) + ' min ' + Math.round(x % 60000 / 1000) + ' s';
    return Math.floor(x / 3600000) + ' h ' + Math.round(x % 3600000 / 60000) + ' min';
  }
  function ago(t) {
    const s = Math.round((now() - ms(t)) / 1000);
    if (s < 5) return 'just now';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 172800) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' days ago';
  }
  function clock(t) {
    const d = new Date(ms(t));
    return d.toDateString() === new Date(now()).toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
  }
  const full = t => esc(new Date(ms(t)).toLocaleString());
  // when: a relative age the page keeps fresh; at: the viewer's local time.
  const when = t => t ? `<time data-t="${esc(t)}" datetime="${esc(t)}" title="${full(t)}">${ago(t)}</time>` : '';
  const at = t => t ? `<span title="${full(t)}">${esc(clock(t))}</span>` : '';

  const stClass = s => s === 'success' ? 'ok' : s === 'starting' ? 'run' : s === 'aborted' ? 'gone' : 'bad';
  const status = s => `<span class="chip c-${stClass(s)}" data-status="${esc(s)}">${esc(s)}</span>`;
  const state = s => `<span class="chip c-${esc(s)}" data-state="${esc(s)}">${esc(s)}</span>`;

  function badges(a) {
    let h = '';
    const l = a.last_deployment;
    if (l && l.status === 'starting') h += `<span class="badge b-deploying">${esc(l.kind === 'restart' ? 'restarting' : 'deploying')}</span>`;
    if (a.paused) h += '<span class="badge b-paused">paused</span>';
    if (a.maintenance) h += '<span class="badge b-maintenance">maintenance</span>';
    if (a.canary) h += `<span class="badge b-canary">canary ${a.canary.percent}%</span>`;
    if (a.idle) h += a.idle.waking ? '<span class="badge b-idle">waking</span>' : '<span class="badge b-idle">idle</span>';
    return h;
  }

  function proc(p) {
    const sq = [];
    let live = 0;
    for (const c of p.states) {
      if (c.state === 'ready' || c.state === 'unhealthy' || c.state === 'booted' || c.state === 'starting') live += c.n;
      for (let i = 0; i < c.n && sq.length < 16; i++) sq.push(`<i class="sq s-${esc(c.state)}"></i>`);
    }
    let words = p.states.map(c => c.n + ' ' + c.state).join(', ') || 'none';
    if (live !== p.want) words += ` · ${p.want} wanted`;
    return `<span class="proc" data-process="${esc(p.name)}"><b>${esc(p.name)}</b>${sq.join('')}<span class="words">${esc(words)}</span></span>`;
  }

  const attn = (a, cls) => a.attention && a.attention.length
    ? `<ul class="attn ${cls || ''}">${a.attention.map(n => `<li class="n-${esc(n.level)}">${esc(n.text)}${n.at ? ' <span class="muted">· ' + when(n.at) + '</span>' : ''}</li>`).join('')}</ul>` : '';

  // ---- overview -------------------------------------------------------------------------

  function appRow(a) {
    const r = a.release, l = a.last_deployment;
    const rel = r
      ? `<span class="img" data-image="${esc(r.image)}">${esc(r.image)}</span>${imgID(r.image_id)} <span class="muted">· ${when(r.deployed_at)}</span>`
      : '<span class="muted">no release serves yet</span>';
    let last = '<span class="muted">no deployment yet</span>';
    if (l) {
      last = `<span data-last="${l.id}" data-image="${esc(l.image)}">${status(l.status)}</span> <span class="muted">${esc(l.kind)} #${l.id} · ${when(l.started_at)}</span>`;
      if (!r || l.image !== r.image || (l.image_id && l.image_id !== r.image_id)) last += `<div class="img muted">${esc(l.image)}${imgID(l.image_id)}</div>`;
    }
    return `<li class="app lvl-${esc(a.level)}" data-app="${esc(a.name)}" data-level="${esc(a.level)}">` +
      `<div class="a-name"><a href="#/apps/${enc(a.name)}">${esc(a.name)}</a>${badges(a)}</div>` +
      `<div class="a-rel">${rel}</div>` +
      `<div class="a-procs">${a.processes.map(proc).join('') || '<span class="muted">no process</span>'}</div>` +
      `<div class="a-last">${last}</div>${attn(a)}</li>`;
  }

  function renderOverview(d) {
    apps = new Map(d.apps.map(a => [a.name, a]));
    document.title = 'podswitch';
    if (!d.apps.length) {
      view.innerHTML = '<p class="muted">No podswitch app is configured.</p>';
      return;
    }
    view.innerHTML = `<p class="summary" id="summary"></p><ul class="apps" id="apps">${d.apps.map(appRow).join('')}</ul>`;
    summary();
  }

  function patchOverview(p) {
    if (!apps) return;
    for (const a of p.apps) apps.set(a.name, a);
    for (const n of p.removed || []) apps.delete(n);
    const list = document.getElementById('apps');
    const row = n => list && list.querySelector(`li[data-app="${n}"]`);
    if (!list || (p.removed && p.removed.length) || p.apps.some(a => !row(a.name))) {
      renderOverview({apps: [...apps.values()].sort((x, y) => x.name < y.name ? -1 : 1)});
      return;
    }
    for (const a of p.apps) row(a.name).outerHTML = appRow(a);
    summary();
  }

  function summary() {
    const el = document.getElementById('summary');
    if (!el) return;
    let bad = 0, warn = 0, busy = 0;
    for (const a of apps.values()) {
      if (a.level === 'bad') bad++;
      else if (a.level === 'warn') warn++;
      else if (a.level === 'busy') busy++;
    }
    const parts = [`<b>${apps.size}</b> app${apps.size === 1 ? '' : 's'}`];
    if (bad) {
      const names = [...apps.values()].filter(a => a.level === 'bad').map(a => `<a href="#/apps/${enc(a.name)}">${esc(a.name)}</a>`);
      parts.push(`<span class="bad"><b class="bad">${bad}</b> need${bad === 1 ? 's' : ''} a person:</span> ${names.slice(0, 10).join(', ')}${names.length > 10 ? ', …' : ''}`);
    }
    if (warn) parts.push(`${warn} with a warning`);
    if (busy) parts.push(`${busy} deploying`);
    if (!bad && !warn) parts.push('nothing needs a person');
    el.innerHTML = parts.join(' · ');
  }

  // ---- one app --------------------------------------------------------------------------

  function renderApp(d) {
    appData = d;
    const back = '<p class="crumbs"><a href="#/">← All apps</a></p>';
    if (d.missing) {
      document.title = d.missing + ' · podswitch';
      view.innerHTML = `${back}<p>No app named <b>${esc(d.missing)}</b> in the running config.</p>`;
      return;
    }
    const a = d.app, r = a.release;
    document.title = a.name + ' · podswitch';
    const facts = [['Serving', r
      ? `<span class="img">${esc(r.image)}</span>${imgID(r.image_id)} <span class="muted">· release <span class="mono">${esc(short(r.id))}</span> · since ${at(r.deployed_at)} (${when(r.deployed_at)})</span>`
      : '<span class="muted">no release serves yet</span>']];
    if (!r || r.id !== a.desired_release) {
      facts.push(['Wanted', `<span class="img">${esc(a.desired_image)}</span>${imgID(a.desired_image_id)} <span class="muted">· release <span class="mono">${esc(short(a.desired_release))}</span></span>`]);
    }
    facts.push(['Processes', a.processes.map(proc).join('<br>') || '<span class="muted">none</span>']);
    if (d.overrides) {
      facts.push(['Overrides', d.overrides.map(o => `${esc(o.setting)} = <span class="mono">${esc(o.value)}</span> <span class="muted">(config says ${esc(o.config_value || '—')}; ${esc(o.operation)} ${when(o.at)})</span>`).join('<br>')]);
    }
    if (a.paused) facts.push(['Paused', `since ${at(a.paused.since)} (${when(a.paused.since)}); new requests wait up to ${esc(a.paused.timeout)}`]);
    if (a.maintenance) facts.push(['Maintenance', `since ${at(a.maintenance.since)}: “${esc(a.maintenance.message)}”`]);
    if (a.idle) facts.push(['Idle', a.idle.waking ? `waking up: a web container boots; ${a.idle.held} requests held` : `asleep since ${at(a.idle.since)} (${when(a.idle.since)}); the next request wakes it`]);
    if (a.canary) facts.push(['Canary', `${esc(a.canary.image)} (release ${esc(a.canary.release)}) ${a.canary.in_service ? `gets ${a.canary.percent}% of new clients since ${at(a.canary.since)}; ${a.canary.ready} ready` : `boots, then gets ${a.canary.percent}% of new clients`}${a.canary.header ? `; header ${esc(a.canary.header)}${a.canary.header_value ? '=' + esc(a.canary.header_value) : ''}` : ''}${a.canary.cookie ? `; cookie ${esc(a.canary.cookie)}=${esc(a.canary.cookie_value)}` : ''}`]);
    if (a.hosts) facts.push(['Hosts', a.hosts.map(h => `<span data-host="${esc(h.name)}" data-host-state="${esc(h.state)}"><b>${esc(h.name)}</b> <span class="mono muted">${esc(h.address)}</span> ${h.state === 'up' ? 'up' : `<span class="err">${esc(h.state)}</span>`} <span class="muted">since ${when(h.since)}</span></span>`).join('<br>')]);
    if (a.last_wake) facts.push(['Last wake', `${at(a.last_wake.at)} by ${esc(a.last_wake.trigger)}; cold start ${esc(a.last_wake.cold_start)}`]);
    view.innerHTML = back +
      `<div class="app-head lvl-${esc(a.level)}" data-app="${esc(a.name)}" data-level="${esc(a.level)}"><h1>${esc(a.name)}</h1>${badges(a)}</div>` +
      attn(a, 'box') +
      `<dl class="facts">${facts.map(f => `<dt>${f[0]}</dt><dd>${f[1]}</dd>`).join('')}</dl>` +
      `<h2>Containers</h2>${containers(d.containers)}` +
      `<h2>Deployments</h2>${history(a.name, d.deployments, d.deployment)}` +
      `<section id="timeline">${d.deployment ? timeline(d.deployment) : route.dep ? `<p class="muted">Deployment #${route.dep} is no longer in the history.</p>` : ''}</section>`;
    place(view);
  }

  function containers(cs) {
    if (!cs || !cs.length) return '<p class="muted">No container.</p>';
    const rows = cs.map(c => `<tr data-container="${esc(c.id)}" data-state="${esc(c.state)}">` +
      `<td class="mono" title="${esc(c.name)}">${esc(short(c.id))}</td><td>${esc(c.process)}</td>` +
      `<td>${state(c.state)}${c.note ? ` <span class="err">${esc(c.note)}</span>` : c.unreachable ? ' <span class="err">not answering</span>' : ''}</td>` +
      `<td>${at(c.since)} <span class="muted">${when(c.since)}</span></td>` +
      `<td class="mono">${esc(c.dial || '—')}</td><td class="mono">${esc(short(c.release))}</td></tr>`);
    return '<div class="scroll"><table class="ctrs"><thead><tr><th>Container</th><th>Process</th><th>State</th>' +
      `<th>Since</th><th>Dial</th><th>Release</th></tr></thead><tbody>${rows.join('')}</tbody></table></div>`;
  }

  function history(app, ds, sel) {
    if (!ds || !ds.length) return '<p class="muted">No deployment yet.</p>';
    const rows = ds.map(x => {
      const notes = [];
      if (x.failed && (x.status === 'success' || x.kind === 'restart')) notes.push(`${x.failed} failed attempt${x.failed > 1 ? 's' : ''}, retried`);
      if (x.crashed) notes.push(`${x.crashed} crashed`);
      if (x.error) notes.push(`<span class="err">${esc(x.error)}</span>`);
      const took = x.ended_at ? fmtDur(ms(x.ended_at) - ms(x.started_at)) : '…';
      return `<tr data-deployment="${x.id}"${sel && sel.id === x.id ? ' class="sel"' : ''}>` +
        `<td><a href="#/apps/${enc(app)}/deployments/${x.id}">#${x.id}</a></td>` +
        `<td>${esc(x.kind)}${x.process ? ' ' + esc(x.process) : ''}${x.trigger ? ` <span class="muted">${esc(x.trigger)}</span>` : ''}</td>` +
        `<td>${status(x.status)}</td><td class="img">${esc(x.image)}${imgID(x.image_id)}</td>` +
        `<td>${at(x.started_at)} <span class="muted">${when(x.started_at)}</span></td><td>${took}</td>` +
        `<td class="wrap">${notes.join('; ')}</td></tr>`;
    });
    return '<div class="scroll"><table class="deps"><thead><tr><th>#</th><th>Kind</th><th>Status</th><th>Image</th>' +
      `<th>Started</th><th>Took</th><th>Notes</th></tr></thead><tbody>${rows.join('')}</tbody></table></div>`;
  }

  // ---- the timeline of a deployment -----------------------------------------------------

  // running: the deployment goes on, or the containers it replaced still stop.
  const running = d => d.status === 'starting' ||
    (d.status === 'success' && !d.retired_at && (d.containers || []).some(c => c.role === 'old'));

  const STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 18e5, 36e5];

  function timeline(d) {
    const cs = d.containers || [];
    const t0 = ms(d.started_at);
    let t1 = Math.max(t0, ms(d.ended_at), ms(d.switched_at), ms(d.retired_at));
    for (const c of cs) for (const tr of c.timeline || []) t1 = Math.max(t1, ms(tr.at));
    if (d.hook) t1 = Math.max(t1, ms(d.hook.started_at), ms(d.hook.ended_at));
    if (running(d)) t1 = Math.max(t1, now());
    const span = Math.max(t1 - t0, 1);
    const x = t => Math.min(100, Math.max(0, (t - t0) / span * 100)).toFixed(3);
    const seg = (a, b, cls, title) => b <= t0 ? '' :
      `<span class="seg ${cls}" data-x="${x(Math.max(a, t0))},${Math.max(0, x(b) - x(Math.max(a, t0))).toFixed(3)}" title="${esc(title)}"></span>`;
    const sw = d.switched_at ? `<span class="sw tl-switch" data-x="${x(ms(d.switched_at))}" title="switch at +${fmtDur(ms(d.switched_at) - t0)}"></span>` : '';
    const row = (role, id, label, inner, note) => `<div class="tl-row" data-role="${role}"${id ? ` data-container="${esc(id)}"` : ''}>` +
      `<div class="tl-label">${label}</div><div class="track">${inner}${sw}</div>${note ? `<div class="tl-note">${note}</div>` : ''}</div>`;
    const first = (tl, s) => tl.find(t => t.state === s);

    // New containers that never booted are failed attempts; those started
    // after one are retries.
    const failedBefore = {};
    const rows = [];
    const news = cs.filter(c => c.role === 'new'), olds = cs.filter(c => c.role !== 'new');
    const startOf = c => ms(((c.timeline || [])[0] || {}).at);
    news.sort((a, b) => a.process < b.process ? -1 : a.process > b.process ? 1 : startOf(a) - startOf(b));
    for (const c of [...news, ...olds]) {
      const tl = c.timeline || [];
      let inner = '';
      // From the create call to the start: Podman's part of the boot.
      if (c.created_at && tl.length) inner += seg(ms(c.created_at), ms(tl[0].at), 's-creating', `creating ${fmtDur(ms(tl[0].at) - ms(c.created_at))}`);
      for (let i = 0; i < tl.length; i++) {
        const s = tl[i].state, a = ms(tl[i].at);
        const b = i + 1 < tl.length ? ms(tl[i + 1].at) : t1;
        if (s === 'stopped') continue;
        if (s === 'crashed') inner += `<span class="mark" data-x="${x(a)}" title="crashed at ${esc(clock(tl[i].at))}${tl[i].note ? ': ' + esc(tl[i].note) : ''}">✕</span>`;
        const serving = c.role === 'old' && s === 'ready' ? ' serving' : '';
        inner += seg(a, b, 's-' + s + serving, `${s} ${fmtDur(b - Math.max(a, t0))}${tl[i].note ? ': ' + tl[i].note : ''}`);
      }
      const start = first(tl, 'starting'), booted = first(tl, 'booted'), crash = first(tl, 'crashed');
      const notes = [];
      let tag = '';
      if (c.role === 'new') {
        const failed = !booted && ['crashed', 'stopping', 'stopped'].includes(c.state);
        const before = failedBefore[c.process] || 0;
        if (failed) {
          tag = ' <span class="muted">failed</span>';
          failedBefore[c.process] = before + 1;
        } else if (before) tag = ` <span class="muted">retry ${before}</span>`;
        const born = c.created_at ? ms(c.created_at) : start ? ms(start.at) : 0;
        const podman = c.created_at && start ? ` (Podman ${fmtDur(ms(start.at) - born)}, app ${fmtDur((booted ? ms(booted.at) : t1) - ms(start.at))})` : '';
        if (start && booted) notes.push(`${c.process === 'web' ? 'accepted a connection' : 'running'} <b>${fmtDur(ms(booted.at) - born)}</b> after its creation${podman}`);
        else if (start && c.state === 'starting') notes.push(`booting for ${fmtDur(t1 - born)}…${podman}`);
        else if (start) {
          const end = tl.find(t => t.state === 'crashed' || t.state === 'stopping');
          if (end && !crash) notes.push(`<span class="err">${c.process === 'web' ? 'no connection accepted' : 'not running long enough'} ${fmtDur(ms(end.at) - born)} after its creation</span>`);
        }
        const disc = tl.find(t => t.state === 'stopping' && t.note);
        if (disc && !crash) notes.push(esc(disc.note));
      } else {
        const dr = first(tl, 'draining'), sp = first(tl, 'stopping'), sd = first(tl, 'stopped');
        if (dr) notes.push(`drained in <b>${fmtDur((sp ? ms(sp.at) : t1) - ms(dr.at))}</b>${sp ? '' : '…'}`);
        if (sp) notes.push(`stopped in <b>${fmtDur((sd ? ms(sd.at) : t1) - ms(sp.at))}</b>${sd ? '' : '…'}`);
        if (!dr && !crash) notes.push(`still ${esc(c.state)}`);
      }
      if (crash) notes.push(`<span class="err">crashed${start && c.role === 'new' ? ' ' + fmtDur(ms(crash.at) - ms(start.at)) + ' after its start' : ''}${crash.note ? ': ' + esc(crash.note) : ''}</span>`);
      if (c.exit_code != null && !crash) notes.push(`exit code ${c.exit_code}`);
      const label = `<span class="role">${esc(c.role)}</span><b>${esc(c.process)}</b> <span class="mono" title="${esc(c.name)}">${esc(short(c.id))}</span>${tag}`;
      rows.push(row(c.role, c.id, label, inner, notes.join(' · ')));
      if (c.role === 'new' && d.hook && c === news[news.length - 1]) rows.push(hookRow());
    }
    if (d.hook && !news.length) rows.push(hookRow());
    function hookRow() {
      const h = d.hook, a = ms(h.started_at), b = h.ended_at ? ms(h.ended_at) : t1;
      const bad = h.exit_code != null && h.exit_code !== 0;
      const note = `ran ${h.ended_at ? '' : 'for '}<b>${fmtDur(b - a)}</b>${h.ended_at ? '' : '…'}${h.exit_code != null ? ', exit code ' + h.exit_code : ''}`;
      return row('hook', '', '<span class="role">hook</span><b>postdeploy</b>', seg(a, b, 'hook' + (bad ? ' bad' : ''), 'postdeploy hook'), bad ? `<span class="err">${note}</span>` : note);
    }

    const step = STEPS.find(s => span / s <= 6) || 36e5;
    let ticksHtml = '';
    const edge = v => v > 88 ? ' last' : '';
    for (let t = 0; t <= span; t += step) ticksHtml += `<span class="tick${t ? edge(x(t0 + t)) : ' first'}" data-x="${x(t0 + t)}">${t ? '+' + fmtDur(t) : 'start'}</span>`;
    const axis = `<div class="tl-row axis-row"><div class="tl-label muted">time since the start</div><div class="axis">${ticksHtml}</div></div>`;
    const swLabel = d.switched_at
      ? `<div class="tl-row"><div class="tl-label"></div><div class="axis"><span class="tick sw-label${edge(x(ms(d.switched_at)))}" data-x="${x(ms(d.switched_at))}">switch +${fmtDur(ms(d.switched_at) - t0)}</span></div></div>` : '';

    const facts = [status(d.status), `started ${at(d.started_at)} (${when(d.started_at)})`];
    if (d.trigger) facts.push('by ' + esc(d.trigger));
    facts.push(d.ended_at ? `ended after <b>${fmtDur(ms(d.ended_at) - t0)}</b>` : `running for ${fmtDur(now() - t0)}`);
    if (d.switched_at) facts.push(`switched at +${fmtDur(ms(d.switched_at) - t0)}`);
    if (d.retired_at) facts.push(`old containers gone at +${fmtDur(ms(d.retired_at) - t0)}`);
    const legend = ['creating', 'starting', 'booted', 'ready', 'draining', 'stopping'].map(s => `<span><i class="sq s-${s}"></i>${s}</span>`).join('') +
      '<span><i class="sq s-crashed"></i>crashed ✕</span><span><i class="sq hook"></i>postdeploy hook</span><span><i class="sw-key"></i>switch</span>';
    return `<h2 id="tl-title" data-deployment="${d.id}">Timeline of ${esc(d.kind)} #${d.id} <span class="muted">·</span> <span class="img">${esc(d.image)}</span>${imgID(d.image_id)}</h2>` +
      `<div class="tl"><div class="tl-head">${facts.join(' · ')}${d.error ? `<div class="err">${esc(d.error)}</div>` : ''}</div>` +
      (rows.length ? swLabel + rows.join('') + axis : '<p class="muted">No container yet.</p>') +
      `<div class="legend">${legend}</div></div>`;
  }

  // place positions bars and marks: CSP forbids inline style attributes.
  function place(root) {
    for (const e of root.querySelectorAll('[data-x]')) {
      const [l, w] = e.dataset.x.split(',');
      e.style.left = l + '%';
      if (w !== undefined) e.style.width = w + '%';
    }
  }

  // ---- live -----------------------------------------------------------------------------

  function setLive(on) {
    liveEl.dataset.live = on ? 'on' : 'off';
    liveEl.textContent = on ? 'live' : 'reconnecting…';
  }

  function connect() {
    clearTimeout(retryTimer);
    if (es) es.close();
    let url = 'api/events';
    if (route.app) url += '?app=' + enc(route.app) + (route.dep ? '&deployment=' + route.dep : '');
    const s = es = new EventSource(url);
    const on = (name, fn) => s.addEventListener(name, e => {
      if (s !== es) return;
      retryDelay = 1000;
      setLive(true);
      const d = JSON.parse(e.data);
      if (d.now) skew = ms(d.now) - Date.now();
      fn(d);
    });
    on('overview', d => { if (!route.app) renderOverview(d); });
    on('apps', d => { if (!route.app) patchOverview(d); });
    on('app', d => { if (route.app) renderApp(d); });
    s.onopen = () => { if (s === es) setLive(true); };
    s.onerror = () => {
      if (s !== es) return;
      setLive(false);
      // The browser retries by itself after a dropped stream; an answer
      // it cannot use (a 502 while Caddy restarts, a 401) closes it.
      if (s.readyState === EventSource.CLOSED) {
        retryTimer = setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 15000);
      }
    };
  }

  function go() {
    const m = location.hash.match(/^#\/apps\/([a-z0-9-]+)(?:\/deployments\/(\d+))?$/);
    route = m ? {app: m[1], dep: m[2] ? +m[2] : 0} : {};
    apps = null;
    appData = null;
    view.innerHTML = '<p class="muted">Loading…</p>';
    connect();
  }

  // Ages stay fresh, and a deployment that runs grows, without asking the server.
  setInterval(() => {
    ticks++;
    const d = appData && appData.deployment;
    const tl = document.getElementById('timeline');
    if (route.app && d && tl && running(d)) {
      tl.innerHTML = timeline(d);
      place(tl);
    }
    if (ticks % 10 === 0) for (const e of view.querySelectorAll('time[data-t]')) e.textContent = ago(e.dataset.t);
  }, 1000);

  window.addEventListener('hashchange', go);
  go();
})();
