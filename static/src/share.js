// The Share dialog: the links to this document, each with what it gives and
// who can reach it, and "Reset links" for the admin.
//
// What always holds here:
//  - the admin link is never offered: with access tokens the dialog shows
//    the document's edit and view links (GET /links), and the page's own
//    address carries no admin token (auth.js took it out);
//  - each link says what it gives (edit, read only, or everything on a
//    server without access control) and, when its host is 127.0.0.1,
//    localhost or [::1], that it reaches only this computer;
//  - a view-only person sees their own link as read-only, never the
//    sentence meant for an edit link;
//  - "Reset links" is shown only to the admin, asks for a confirmation in
//    the dialog, and shows the new links it answers.

import { api, apiUrl, ApiError } from "./docapi.js";
import { isAdmin, accessControl } from "./auth.js";

const $ = (sel) => document.querySelector(sel);

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

/** Whether a URL's host is this computer only (127.0.0.0/8, localhost, [::1]). */
export function isLoopback(url) {
  const host = new URL(url, location.href).hostname.toLowerCase();
  return LOOPBACK.has(host) || /^127\.\d+\.\d+\.\d+$/.test(host) || host.endsWith(".localhost");
}

/** What the dialog says of who can reach `urls`: "" unless one of them is this computer's own address. */
export function reachNote(urls) {
  if (!urls.some(isLoopback)) return "";
  const host = new URL(urls[0], location.href).host;
  const [these, it] = urls.length === 1 ? ["This link uses", "it"] : ["These links use", "them"];
  return `${these} ${host}, an address that reaches only this computer: people on other computers cannot open ${it}. To write with others, run collab on a server they can reach (see the README).`;
}

/** The rows the dialog shows for `links` (the API's answer, or null) and the page's `role`. */
export function shareEntries(links, role, here) {
  if (links) {
    const edit = new URL(links.edit, here).href;
    const view = new URL(links.view, here).href;
    return [
      { id: "edit", label: "Can edit", url: edit,
        gives: "Anyone with this link can read and change the text, and bring back earlier versions." },
      { id: "view", label: "Can only read", url: view,
        gives: "Anyone with this link can read the text and its history and see who is here, but cannot change anything." },
    ];
  }
  if (role === "view") {
    return [{ id: "view", label: "Your link: read only", url: here,
      gives: "This link lets whoever has it read this document, not change it. For an edit link, ask the person who shared it with you." }];
  }
  return [{ id: "open", label: "This document’s address", url: here,
    gives: "This server has no access control: anyone who can reach this address can read and change the document." }];
}

export class ShareDialog {
  /** opts: docName, getRole(), showError(text). */
  constructor(opts) {
    Object.assign(this, opts);
    this.dialog = $("#share-dialog");
    this.box = $("#share-links");
    $("#share-close").addEventListener("click", () => this.dialog.close());
    $("#share-reset").addEventListener("click", () => this.askReset());
    $("#share-reset-cancel").addEventListener("click", () => this.cancelReset());
    $("#share-reset-confirm").addEventListener("click", () => this.reset());
  }

  async open() {
    this.box.textContent = "Loading…";
    this.cancelReset();
    $("#share-reset-box").hidden = true;
    $("#share-note").textContent = "";
    this.dialog.showModal();
    const here = location.href;
    let links = null;
    if (accessControl && this.getRole() !== "view") {
      try {
        links = (await (await api(apiUrl(this.docName, "/links"))).json()).links;
      } catch (e) {
        this.box.textContent = `The links could not be loaded: ${e.message}`;
        return;
      }
    }
    this.render(shareEntries(links, this.getRole(), here));
    $("#share-reset-box").hidden = !(accessControl && isAdmin && links);
  }

  render(entries) {
    const box = this.box;
    box.textContent = "";
    for (const e of entries) {
      const row = box.appendChild(document.createElement("div"));
      row.className = "share-row";
      row.dataset.link = e.id;
      const inputId = `share-url-${e.id}`;
      const title = row.appendChild(document.createElement("label"));
      title.htmlFor = inputId;
      title.textContent = e.label;
      const line = row.appendChild(document.createElement("div"));
      line.className = "share-line";
      const input = line.appendChild(document.createElement("input"));
      input.id = inputId;
      input.readOnly = true;
      input.value = e.url;
      input.addEventListener("focus", () => input.select());
      const copy = line.appendChild(document.createElement("button"));
      copy.type = "button";
      copy.textContent = "Copy";
      copy.setAttribute("aria-label", `Copy the link: ${e.label}`);
      copy.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(e.url);
        } catch (_) {
          input.select();
          document.execCommand("copy");
        }
        copy.textContent = "Copied";
      });
      const gives = row.appendChild(document.createElement("p"));
      gives.className = "share-gives";
      gives.textContent = e.gives;
    }
    const reach = reachNote(entries.map((e) => e.url));
    if (reach) {
      const p = box.appendChild(document.createElement("p"));
      p.className = "share-reach";
      p.textContent = reach;
    }
  }

  askReset() {
    $("#share-reset").hidden = true;
    $("#share-reset-ask").hidden = false;
    $("#share-reset-confirm").focus();
  }

  cancelReset() {
    $("#share-reset").hidden = false;
    $("#share-reset-ask").hidden = true;
  }

  async reset() {
    const button = $("#share-reset-confirm");
    button.disabled = true;
    try {
      const r = await api(apiUrl(this.docName, "/links/reset"), { method: "POST", admin: true, json: {} });
      const { links } = await r.json();
      this.render(shareEntries(links, this.getRole(), location.href));
      $("#share-note").textContent = "New links made. The old ones no longer work, and everyone who used them was cut off: send the new links to the people who should have them.";
      this.cancelReset();
    } catch (e) {
      const text = e instanceof ApiError ? e.message : String(e);
      $("#share-note").textContent = `The links could not be reset: ${text}`;
    } finally {
      button.disabled = false;
    }
  }
}
