// The consultation playground. Plain JavaScript, no framework, no build step.
// Safety rule: no text from the user or the model is ever parsed as HTML; every node is
// built with createElement/textContent, so nothing a message contains can run as script.
"use strict";
(() => {
  const STORE = "huatuo.playground.conversations"; // localStorage: all consultations
  const PREFS = "huatuo.playground.settings"; // localStorage: model, sampling, theme
  const DRAFT = "huatuo.playground.draft"; // localStorage: the text being typed
  const KEY = "huatuo.playground.apiKey"; // sessionStorage only: gone when the tab closes
  const $ = (id) => document.getElementById(id);
  const state = { conversations: [], currentId: null, busy: false, controller: null,
                  editing: null };

  // ---- storage ---------------------------------------------------------------------------
  function load(storage, name, fallback) {
    try { return JSON.parse(storage.getItem(name)) ?? fallback; } catch { return fallback; }
  }
  function save(storage, name, value) {
    try { storage.setItem(name, JSON.stringify(value)); } catch (e) {
      showStatus(`This browser refused to save the conversation: ${e.message}`);
    }
  }
  function persist() {
    const kept = state.conversations.filter((c) => c.messages.length > 0);
    save(localStorage, STORE, { current: state.currentId, conversations: kept });
    renderHistory();
  }

  // ---- small DOM helpers -----------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function button(label, className, onClick) {
    const b = el("button", className, label);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }
  async function copyText(text) {
    try { await navigator.clipboard.writeText(text); return true; } catch {
      // No clipboard API outside secure contexts (plain http on a hospital host): old way.
      const area = el("textarea", "offscreen");
      area.value = text;
      document.body.append(area);
      area.select();
      let ok = false;
      try { ok = document.execCommand("copy"); } catch { ok = false; }
      area.remove();
      return ok;
    }
  }
  function copyButton(getText) {
    const b = button("Copy", "copy", async () => {
      b.textContent = (await copyText(getText())) ? "Copied" : "Copy failed";
      setTimeout(() => { b.textContent = "Copy"; }, 1500);
    });
    return b;
  }

  // ---- Markdown, built as DOM nodes ------------------------------------------------------
  // Blocks: paragraphs, headings, fenced code, lists, quotes, rules. Inline: code, bold,
  // italic, links (http/https only). Anything else stays literal text.
  const INLINE = new RegExp([
    "`([^`\\n]+)`", // 1 code
    "\\*\\*([^\\n]+?)\\*\\*", // 2 bold
    "\\*([^\\s*](?:[^*\\n]*?[^\\s*])?)\\*", // 3 italic
    "\\[([^\\]\\n]+)\\]\\(([^)\\s]+)\\)", // 4 label, 5 href
    "(https?://[^\\s<>()]*[^\\s<>().,;:!?'\"，。；：！？、）])", // 6 bare URL
  ].join("|"), "g");

  function link(label, href) {
    if (!/^https?:\/\//i.test(href)) return document.createTextNode(`${label} (${href})`);
    const a = el("a", null, label);
    a.href = href;
    a.rel = "noopener noreferrer nofollow";
    a.target = "_blank";
    return a;
  }
  function addText(parent, text) {
    text.split("\n").forEach((part, i) => {
      if (i > 0) parent.append(el("br"));
      if (part) parent.append(document.createTextNode(part));
    });
  }
  function renderInline(text, parent) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      addText(parent, text.slice(last, m.index));
      if (m[1] !== undefined) parent.append(el("code", null, m[1]));
      else if (m[2] !== undefined) renderInline(m[2], parent.appendChild(el("strong")));
      else if (m[3] !== undefined) renderInline(m[3], parent.appendChild(el("em")));
      else if (m[4] !== undefined) parent.append(link(m[4], m[5]));
      else parent.append(link(m[6], m[6]));
      last = m.index + m[0].length;
    }
    addText(parent, text.slice(last));
    return parent;
  }
  function codeBlock(code, lang) {
    const box = el("div", "code");
    const head = el("div", "code-head");
    head.append(el("span", null, lang || "code"), copyButton(() => code));
    const pre = el("pre");
    pre.append(el("code", null, code));
    box.append(head, pre);
    return box;
  }
  function renderMarkdown(text) {
    const root = document.createDocumentFragment();
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    let para = [];
    let list = null;
    const flush = () => {
      if (para.length) root.append(renderInline(para.join("\n"), el("p")));
      para = [];
    };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = line.match(/^\s*(`{3,}|~{3,})\s*([\w+#.-]*)/);
      const heading = line.match(/^(#{1,6})\s+(.*)$/);
      const item = line.match(/^\s*(?:([-*+•])|(\d{1,9})[.)、])\s+(.*)$/);
      if (fence) {
        flush(); list = null;
        const code = [];
        while (++i < lines.length && !lines[i].trim().startsWith(fence[1])) code.push(lines[i]);
        root.append(codeBlock(code.join("\n"), fence[2])); // an open fence while streaming
      } else if (heading) {
        flush(); list = null;
        root.append(renderInline(heading[2], el(`h${Math.min(heading[1].length + 2, 6)}`)));
      } else if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
        flush(); list = null;
        root.append(el("hr"));
      } else if (item) {
        flush();
        const tag = item[1] ? "ul" : "ol";
        if (!list || list.tagName.toLowerCase() !== tag) {
          list = root.appendChild(el(tag));
          if (item[2] && item[2] !== "1") list.start = Number(item[2]);
        }
        list.append(renderInline(item[3], el("li")));
      } else if (line.startsWith(">")) {
        flush(); list = null;
        root.append(renderInline(line.replace(/^>\s?/, ""), el("blockquote")));
      } else if (!line.trim()) {
        flush(); list = null;
      } else if (list && /^\s{2,}\S/.test(line)) {
        const li = list.lastElementChild; // a list item's continued line
        li.append(el("br"));
        renderInline(line.trim(), li);
      } else {
        list = null;
        para.push(line);
      }
    }
    flush();
    return root;
  }

  // ---- conversations ---------------------------------------------------------------------
  const current = () => state.conversations.find((c) => c.id === state.currentId);
  function newConversation() {
    const conv = { id: `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`,
                   title: "", created: Date.now(), messages: [] };
    state.conversations = state.conversations.filter((c) => c.messages.length > 0);
    state.conversations.unshift(conv);
    state.currentId = conv.id;
    state.editing = null;
    hideStatus();
    renderMessages();
    persist();
    return conv;
  }
  // What the server gets: user/assistant pairs whose answer has text (the API wants them
  // alternating; an exchange that failed before any text is left out).
  function apiHistory(messages) {
    const out = [];
    for (let i = 0; i + 1 < messages.length; i += 2) {
      if (messages[i + 1].content) out.push(
        { role: "user", content: messages[i].content },
        { role: "assistant", content: messages[i + 1].content });
    }
    return out;
  }

  function messageNode(m, i, msgs) {
    const li = el("li", `msg ${m.role}`);
    li.append(el("div", "who", m.role === "user" ? "You · 您" : "HuatuoGPT2"));
    if (m.note) li.append(el("p", "note", m.note));
    const body = el("div", "content");
    if (m.role === "user") body.append(el("p", "plain", m.content));
    else body.append(renderMarkdown(m.content));
    li.append(body);
    if (m.error) li.append(el("p", "error", m.error));
    if (m.meta) li.append(el("p", "meta", m.meta));
    const actions = el("div", "actions");
    actions.append(copyButton(() => m.content));
    const last = i === msgs.length - 1;
    if (!state.busy && last && m.role === "assistant") {
      actions.append(button("Regenerate", "regenerate", regenerate));
    }
    if (!state.busy && m.role === "user" && i === msgs.length - 2) {
      actions.append(button("Edit", "edit", () => editLast(i)));
    }
    li.append(actions);
    return li;
  }
  function renderMessages() {
    const msgs = current() ? current().messages : [];
    $("messages").replaceChildren(...msgs.map((m, i) => messageNode(m, i, msgs)));
    $("empty").hidden = msgs.length > 0;
  }
  function renderHistory() {
    const items = state.conversations.filter((c) => c.messages.length > 0).map((c) => {
      const li = el("li", c.id === state.currentId ? "active" : "");
      li.append(button(c.title || "(untitled)", "open", () => {
        if (state.busy) return;
        state.currentId = c.id;
        state.editing = null;
        hideStatus();
        renderMessages();
        persist();
      }), el("span", "date", new Date(c.created).toLocaleString()));
      return li;
    });
    $("history-list").replaceChildren(...items);
  }

  let renderTimer = null;
  function renderLive(answer) { // while streaming: redraw only the last answer, ~30 times/s
    if (renderTimer) return;
    renderTimer = setTimeout(() => {
      renderTimer = null;
      const node = $("messages").lastElementChild;
      if (node) node.querySelector(".content").replaceChildren(renderMarkdown(answer.content));
      if (stickToBottom) node?.scrollIntoView({ block: "end" });
    }, 30);
  }
  let stickToBottom = true;
  window.addEventListener("scroll", () => {
    stickToBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  });

  // ---- status line -----------------------------------------------------------------------
  function showStatus(text, kind = "error") {
    $("status").textContent = text;
    $("status").className = kind;
    $("status").hidden = false;
  }
  function hideStatus() { $("status").hidden = true; }

  // ---- the API ---------------------------------------------------------------------------
  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) h.Authorization = `Bearer ${key}`;
    return h;
  }
  function number(id) {
    const v = $(id).value.trim();
    return v === "" ? undefined : Number(v);
  }
  function requestBody(messages) {
    const system = $("system").value.trim();
    return {
      model: $("model").value,
      messages: system ? [{ role: "system", content: system }, ...messages] : messages,
      temperature: number("temperature"), top_p: number("top-p"),
      max_tokens: number("max-tokens"),
      stream: true, stream_options: { include_usage: true },
    };
  }
  async function describeFailure(response) {
    let message = "";
    try { message = (await response.json()).error?.message || ""; } catch { message = ""; }
    const s = response.status;
    if (s === 401) {
      showKeyBox();
      return `The server requires an API key (401). Enter it in Settings → API key. ${message}`;
    }
    if (s === 429) {
      const after = response.headers.get("Retry-After") || "a few";
      return `The server is busy (429): please retry in ${after} second(s). ${message}`;
    }
    if (s === 503) return `The server is not taking requests right now (503). ${message}`;
    return `The request failed (${s}). ${message}`;
  }
  // Server-sent events from a fetch body: `data:` lines, `: ping` comments skipped, [DONE] ends.
  async function* sseEvents(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
          const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart()).join("\n");
          if (!data) continue;
          if (data === "[DONE]") return;
          yield JSON.parse(data);
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  // Ask `text`, replacing everything in the conversation from message `keep` on.
  async function ask(text, keep, fromInput) {
    const conv = current() || newConversation();
    const user = { role: "user", content: text };
    const answer = { role: "assistant", content: "" };
    const controller = new AbortController();
    setBusy(true, controller);
    hideStatus();
    const started = performance.now();
    let response;
    try {
      response = await fetch("/v1/chat/completions", {
        method: "POST", headers: headers(), signal: controller.signal,
        body: JSON.stringify(requestBody([...apiHistory(conv.messages.slice(0, keep)), user])),
      });
      if (!response.ok) throw new Error(await describeFailure(response));
    } catch (e) {
      setBusy(false);
      if (!fromInput && !$("question").value.trim()) $("question").value = text;
      showStatus(`${e.name === "AbortError" ? "Stopped before the server answered." : e.message}`
        + " Your question is still in the box.");
      renderMessages();
      return;
    }
    // Accepted: the question joins the conversation and leaves the input box.
    if (fromInput) { $("question").value = ""; localStorage.removeItem(DRAFT); }
    state.editing = null;
    conv.messages.splice(keep, Infinity, user, answer);
    if (!conv.title) conv.title = text.slice(0, 60);
    const trimmed = parseInt(response.headers.get("X-Huatuo-Trimmed-Turns") || "0", 10);
    if (trimmed > 0) {
      answer.note = `To fit the model's context the server left out the ${trimmed} oldest `
        + `turn${trimmed > 1 ? "s" : ""} of this consultation; this answer does not see them.`;
    }
    renderMessages();
    $("messages").lastElementChild.classList.add("streaming");
    let first = null;
    let usage = null;
    try {
      for await (const event of sseEvents(response.body)) {
        if (event.error) {
          answer.error = `The answer was cut off by the server: ${event.error.message}`;
          break;
        }
        const delta = event.choices?.[0]?.delta?.content;
        if (delta) {
          first ??= performance.now();
          answer.content += delta;
          renderLive(answer);
        }
        if (event.usage) usage = event.usage;
      }
    } catch (e) {
      answer.error = e.name === "AbortError" ? "Stopped." : `The connection broke: ${e.message}`;
    }
    const parts = [];
    if (usage) parts.push(`${usage.completion_tokens} tokens`);
    if (first !== null) parts.push(`first text after ${((first - started) / 1000).toFixed(2)} s`);
    parts.push(`${((performance.now() - started) / 1000).toFixed(1)} s`);
    answer.meta = parts.join(" · ");
    answer.firstTextMs = first === null ? null : Math.round(first - started);
    setBusy(false);
    persist();
    renderMessages();
  }
  function setBusy(busy, controller = null) {
    state.busy = busy;
    state.controller = controller;
    $("send").hidden = busy;
    $("stop").hidden = !busy;
    document.body.classList.toggle("busy", busy);
  }
  function regenerate() {
    const msgs = current().messages;
    ask(msgs[msgs.length - 2].content, msgs.length - 2, false);
  }
  function editLast(index) {
    state.editing = index;
    $("question").value = current().messages[index].content;
    $("question").focus();
    showStatus("Editing your last question: send it to replace the question and its answer.",
      "info");
  }

  // ---- models, key, settings, theme ------------------------------------------------------
  function showKeyBox() {
    $("key-box").hidden = false;
    $("settings").hidden = false;
  }
  async function loadModels() {
    let response;
    try { response = await fetch("/v1/models", { headers: headers() }); } catch (e) {
      showStatus(`Could not reach the server: ${e.message}`);
      return;
    }
    if (!response.ok) { showStatus(await describeFailure(response)); return; }
    const ids = (await response.json()).data.map((m) => m.id);
    const wanted = load(localStorage, PREFS, {}).model;
    $("model").replaceChildren(...ids.map((id) => { const o = el("option", null, id); o.value = id; return o; }));
    if (ids.includes(wanted)) $("model").value = wanted;
    if ($("status").textContent.includes("(401)")) hideStatus();
  }
  const FIELDS = { model: "model", temperature: "temperature", "top-p": "top_p",
                   "max-tokens": "max_tokens", system: "system" };
  function saveSettings() {
    const prefs = load(localStorage, PREFS, {});
    for (const [id, name] of Object.entries(FIELDS)) prefs[name] = $(id).value;
    save(localStorage, PREFS, prefs);
  }
  function restoreSettings() {
    const prefs = load(localStorage, PREFS, {});
    for (const [id, name] of Object.entries(FIELDS)) {
      if (id !== "model" && prefs[name] !== undefined) $(id).value = prefs[name];
    }
    applyTheme(prefs.theme || "auto");
  }
  function applyTheme(theme) {
    if (theme === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = theme;
    $("toggle-theme").textContent = { auto: "Theme: auto", light: "Theme: light",
                                      dark: "Theme: dark" }[theme];
  }

  // ---- wiring ----------------------------------------------------------------------------
  function start() {
    const stored = load(localStorage, STORE, { conversations: [] });
    state.conversations = Array.isArray(stored.conversations) ? stored.conversations : [];
    state.currentId = stored.current;
    if (!current()) newConversation();
    restoreSettings();
    $("question").value = localStorage.getItem(DRAFT) || "";
    if (sessionStorage.getItem(KEY)) { $("api-key").value = sessionStorage.getItem(KEY); showKeyBox(); }
    renderMessages();
    renderHistory();

    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = $("question").value.trim();
      if (!text || state.busy) return;
      const msgs = current().messages;
      ask(text, state.editing ?? msgs.length, true);
    });
    $("question").addEventListener("keydown", (e) => {
      // Enter sends; Shift+Enter is a new line; Enter that confirms an IME (Chinese) does not.
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("question").addEventListener("input", () => {
      localStorage.setItem(DRAFT, $("question").value);
    });
    $("stop").addEventListener("click", () => state.controller?.abort());
    $("new-chat").addEventListener("click", () => { if (!state.busy) newConversation(); });
    $("clear-all").addEventListener("click", () => {
      if (state.busy || !confirm("Delete every consultation kept in this browser?")) return;
      state.conversations = [];
      localStorage.removeItem(STORE);
      newConversation();
    });
    $("toggle-history").addEventListener("click", () => { $("history").hidden = !$("history").hidden; });
    $("toggle-settings").addEventListener("click", () => { $("settings").hidden = !$("settings").hidden; });
    $("toggle-theme").addEventListener("click", () => {
      const prefs = load(localStorage, PREFS, {});
      const order = ["auto", "light", "dark"];
      prefs.theme = order[(order.indexOf(prefs.theme || "auto") + 1) % 3];
      save(localStorage, PREFS, prefs);
      applyTheme(prefs.theme);
    });
    for (const id of Object.keys(FIELDS)) $(id).addEventListener("change", saveSettings);
    $("reset-settings").addEventListener("click", () => {
      for (const id of ["temperature", "top-p", "max-tokens", "system"]) $(id).value = "";
      saveSettings();
    });
    $("api-key").addEventListener("change", () => {
      const key = $("api-key").value.trim();
      if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
      loadModels();
    });
    loadModels();
  }
  // For tests and the curious: the renderer the page uses for every answer.
  window.huatuoPlayground = Object.freeze({ renderMarkdown });
  document.addEventListener("DOMContentLoaded", start);
})();
