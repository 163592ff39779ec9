// The little JavaScript the UI needs: the webhooks dialog (open, Close/Esc without saving,
// Help), copying the signing secret, and confirmations.
(function () {
  "use strict";
  const dialog = document.getElementById("webhooks-dialog");
  if (dialog) {
    const form = dialog.querySelector("form");
    const initial = form ? new FormData(form) : null;
    const reset = () => {
      // Close discards edits: put every field back as the server rendered it.
      if (!form || !initial) return;
      for (const el of form.elements) {
        if (!el.name || el.type === "hidden") continue;
        if (el.type === "checkbox") el.checked = initial.getAll(el.name).includes(el.value);
        else if (initial.has(el.name)) el.value = initial.get(el.name);
      }
    };
    document.querySelectorAll("[data-open-webhooks]").forEach((b) =>
      b.addEventListener("click", () => dialog.showModal()));
    dialog.querySelectorAll("[data-close]").forEach((b) =>
      b.addEventListener("click", () => { reset(); dialog.close(); }));
    dialog.addEventListener("cancel", () => reset()); // Esc
    const help = document.getElementById("webhooks-help");
    const helpButton = dialog.querySelector("[data-help]");
    if (help && helpButton) helpButton.addEventListener("click", () => { help.hidden = !help.hidden; });
    if (dialog.dataset.open === "true") dialog.showModal();
  }
  const secret = document.getElementById("signing-secret");
  const reveal = document.querySelector("[data-reveal]");
  if (secret && reveal) reveal.addEventListener("click", () => {
    const shown = secret.dataset.shown === "true";
    secret.textContent = shown ? "whsec_••••••••••••" : secret.dataset.secret;
    secret.dataset.shown = shown ? "false" : "true";
    reveal.textContent = shown ? "Reveal" : "Hide";
  });
  const copy = document.querySelector("[data-copy]");
  if (secret && copy) copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(secret.dataset.secret); copy.textContent = "Copied"; }
    catch (_) { copy.textContent = "Copy failed"; }
  });
  document.querySelectorAll("form[data-confirm]").forEach((f) =>
    f.addEventListener("submit", (e) => { if (!confirm(f.dataset.confirm)) e.preventDefault(); }));
})();
