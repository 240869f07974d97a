// ECG viewer: progressive enhancement only. Every form also works without this script
// (it posts and the server redirects back); with it, feedback is sent without a reload.
(function () {
  "use strict";

  function outcomeText(fb) {
    return fb.outcome === "accepted" ? "Agreed" : "Overridden";
  }

  function addToList(fb) {
    var list = document.querySelector("[data-testid=feedback-list]");
    if (!list) return;
    var empty = list.querySelector("li.muted");
    if (empty) empty.remove();
    var item = document.createElement("li");
    item.className = "fb fb-" + fb.outcome;
    var strong = document.createElement("strong");
    strong.textContent = outcomeText(fb);
    item.appendChild(strong);
    var rest = "";
    if (fb.reason) rest += " · " + fb.reason;
    if (fb.comment) rest += " · “" + fb.comment + "”";
    item.appendChild(document.createTextNode(rest + " "));
    var when = document.createElement("span");
    when.className = "muted";
    when.textContent = fb.when + " · via " + fb.source;
    item.appendChild(when);
    list.appendChild(item);
  }

  function setStatus(text, isError) {
    var status = document.querySelector(".form-status");
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("error", !!isError);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-feedback")) return;
    if (!window.fetch || !window.FormData) return;
    event.preventDefault();
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { "Accept": "application/json" },
      credentials: "same-origin"
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (res) {
      if (!res.ok) throw new Error(res.body && res.body.detail ? res.body.detail : "not recorded");
      addToList(res.body.feedback);
      setStatus("Feedback recorded. Thank you.", false);
      form.reset();
    }).catch(function (err) {
      setStatus("Feedback not recorded: " + err.message, true);
    }).finally(function () {
      buttons.forEach(function (b) { b.disabled = false; });
    });
  });

  // Remember the layout choice in the address (without reloading), so a reload keeps it.
  document.addEventListener("change", function (event) {
    var input = event.target;
    if (!(input instanceof HTMLInputElement) || input.name !== "layout") return;
    var url = new URL(window.location.href);
    url.searchParams.set("layout", input.value);
    window.history.replaceState(null, "", url.toString());
  });
})();
