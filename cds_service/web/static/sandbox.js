// The EHR sandbox page: send a hook call through the service's /sandbox/call, render the
// cards like the CDS Hooks sandbox, send feedback. Everything from the service is put in
// the page as text (textContent); the detail's HTML comes from the service's Markdown
// renderer, which escapes raw HTML and drops unsafe links.
"use strict";

(function () {
  const form = document.getElementById("sandbox-form");
  const statusLine = document.getElementById("status");
  const cardsBox = document.getElementById("cards");
  const exchange = document.getElementById("exchange");

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function safeUrl(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (e) {
      return null;
    }
  }

  async function sendFeedback(service, card, body, resultNode) {
    resultNode.textContent = "sending feedback...";
    const response = await fetch("feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Sandbox": "1" },
      body: JSON.stringify(Object.assign({ service: service, card: card.uuid }, body)),
    });
    const answer = await response.json();
    resultNode.textContent = answer.status === 200
      ? "Feedback sent (" + body.outcome + "); the service stored " + (answer.response.stored || 0) + "."
      : "Feedback refused: HTTP " + answer.status + " " + JSON.stringify(answer.response);
    resultNode.className = "feedback-result " + (answer.status === 200 ? "ok" : "bad");
  }

  function renderCard(service, card, detailHtml) {
    const indicator = ["info", "warning", "critical"].includes(card.indicator) ? card.indicator : "info";
    const box = el("article", { class: "card card-" + indicator, "data-indicator": indicator, "data-card": card.uuid || "" });
    const head = el("header", { class: "card-head" });
    head.appendChild(el("span", { class: "indicator" }, indicator.toUpperCase()));
    head.appendChild(el("h2", { class: "card-summary" }, card.summary || ""));
    box.appendChild(head);
    if (card.source) {
      const source = el("p", { class: "card-source muted" }, "Source: ");
      const url = card.source.url && safeUrl(card.source.url);
      if (url) {
        source.appendChild(el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, card.source.label || url));
      } else {
        source.appendChild(document.createTextNode(card.source.label || ""));
      }
      box.appendChild(source);
    }
    if (detailHtml) {
      const detail = el("div", { class: "card-detail" });
      detail.innerHTML = detailHtml; // rendered and escaped by the service (markdown-it, no raw HTML)
      box.appendChild(detail);
    }
    const result = el("p", { class: "feedback-result", role: "status" });
    const actions = el("div", { class: "card-actions" });
    for (const suggestion of card.suggestions || []) {
      const button = el("button", { type: "button", class: "suggestion" }, "Accept: " + (suggestion.label || "suggestion"));
      button.addEventListener("click", () => sendFeedback(service, card, { outcome: "accepted", suggestion: suggestion.uuid || "" }, result));
      actions.appendChild(button);
    }
    for (const link of card.links || []) {
      const url = safeUrl(link.url);
      if (!url) continue;
      actions.appendChild(el("a", { class: "card-link", href: url, target: "_blank", rel: "noopener noreferrer" }, link.label || url));
    }
    box.appendChild(actions);
    const dismiss = el("div", { class: "card-dismiss" });
    const select = el("select", { "aria-label": "Override reason" });
    select.appendChild(el("option", { value: "" }, "Dismiss without a reason"));
    (card.overrideReasons || []).forEach((reason, index) => {
      select.appendChild(el("option", { value: String(index) }, reason.display || reason.code || "reason"));
    });
    const dismissButton = el("button", { type: "button", class: "dismiss" }, "Dismiss");
    dismissButton.addEventListener("click", () => {
      const chosen = select.value === "" ? null : (card.overrideReasons || [])[Number(select.value)];
      const body = { outcome: "overridden" };
      if (chosen) body.reason = { system: chosen.system || "", code: chosen.code || "", display: chosen.display || "" };
      sendFeedback(service, card, body, result);
    });
    dismiss.appendChild(select);
    dismiss.appendChild(dismissButton);
    box.appendChild(dismiss);
    box.appendChild(result);
    return box;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    statusLine.textContent = "calling the service...";
    cardsBox.replaceChildren();
    const data = new FormData(form);
    if (!data.get("upload") || !data.get("upload").name) data.delete("upload");
    let answer;
    try {
      const response = await fetch("call", { method: "POST", body: data, headers: { "X-Sandbox": "1" } });
      answer = await response.json();
      if (!response.ok) {
        statusLine.textContent = "Refused: " + (answer.detail || JSON.stringify(answer));
        return;
      }
    } catch (e) {
      statusLine.textContent = "Could not reach the sandbox: " + e;
      return;
    }
    document.getElementById("request-json").textContent = JSON.stringify(answer.request, null, 2);
    document.getElementById("response-json").textContent = JSON.stringify(answer.response, null, 2);
    exchange.hidden = false;
    const cards = (answer.response && answer.response.cards) || [];
    statusLine.textContent = "HTTP " + answer.status + " from " + answer.service + ": " + cards.length + " card(s)";
    cards.forEach((card, index) => cardsBox.appendChild(renderCard(answer.service, card, answer.detail_html[index])));
    if (!cards.length) cardsBox.appendChild(el("p", { class: "muted" }, "No cards: the service found nothing to show for this call."));
  });
})();
