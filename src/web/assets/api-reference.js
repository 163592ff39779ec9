// Renders Herald's OpenAPI document (/api/v1/openapi.json) as a reference page, with nothing
// from outside Herald. Text goes in through textContent only.
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

// Text with `inline code`, as OpenAPI's CommonMark descriptions use it.
function prose(tag, attrs, text) {
  const node = el(tag, attrs);
  (text || "").split("`").forEach((piece, i) => {
    node.append(i % 2 ? el("code", {}, piece) : document.createTextNode(piece));
  });
  return node;
}

function refName(ref) {
  return ref.split("/").pop();
}

// A one-line description of a schema's type: `string (date-time)`, `Timestamp | null`, ...
function typeOf(schema) {
  if (!schema) return "";
  if (schema.$ref) return refName(schema.$ref);
  for (const key of ["oneOf", "anyOf", "allOf"]) {
    if (schema[key]) return schema[key].map(typeOf).join(key === "allOf" ? " & " : " | ");
  }
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  let type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "any";
  if (schema.type === "array" || (Array.isArray(schema.type) && schema.type.includes("array"))) {
    type = type.replace("array", `array of ${typeOf(schema.items)}`);
  }
  if (schema.format) type += ` (${schema.format})`;
  return type;
}

function constraints(schema) {
  const parts = [];
  if (!schema) return "";
  if (schema.pattern) parts.push(`pattern ${schema.pattern}`);
  if (schema.minLength !== undefined) parts.push(`at least ${schema.minLength} characters`);
  if (schema.maxLength !== undefined) parts.push(`at most ${schema.maxLength} characters`);
  if (schema.minimum !== undefined) parts.push(`≥ ${schema.minimum}`);
  if (schema.maximum !== undefined) parts.push(`≤ ${schema.maximum}`);
  return parts.join(", ");
}

function schemaLink(schema) {
  const name = typeOf(schema);
  if (schema && schema.$ref) return el("a", { href: `#schema-${refName(schema.$ref)}` }, name);
  return el("code", {}, name);
}

function parametersTable(parameters) {
  const rows = parameters.map((p) =>
    el("tr", {},
      el("td", {}, el("code", {}, p.name), p.required ? " (required)" : ""),
      el("td", {}, p.in),
      el("td", {}, schemaLink(p.schema)),
      el("td", {}, prose("span", {}, p.description), constraints(p.schema) ? el("div", { class: "muted" }, constraints(p.schema)) : null)));
  return el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "Parameter"), el("th", {}, "In"), el("th", {}, "Type"), el("th", {}, "About"))),
    el("tbody", {}, ...rows));
}

function responsesTable(doc, responses) {
  const rows = Object.entries(responses).map(([status, response]) => {
    const resolved = response.$ref ? doc.components.responses[refName(response.$ref)] : response;
    const content = resolved.content && resolved.content["application/json"];
    return el("tr", {},
      el("td", {}, el("code", {}, status)),
      el("td", {}, prose("span", {}, resolved.description)),
      el("td", {}, content ? schemaLink(content.schema) : (resolved.content ? "text" : "")));
  });
  return el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "Status"), el("th", {}, "Meaning"), el("th", {}, "Body"))),
    el("tbody", {}, ...rows));
}

function operation(doc, method, path, op) {
  const id = `op-${op.operationId}`;
  const card = el("section", { class: "card", id },
    el("h3", { class: "section-title" }, el("span", { class: `method ${method}` }, method.toUpperCase()), " ", el("code", {}, path)),
    op.summary ? prose("p", {}, op.summary) : null);
  for (const paragraph of (op.description || "").split("\n\n")) {
    if (paragraph) card.append(prose("p", { class: "muted" }, paragraph));
  }
  if (op.parameters && op.parameters.length) card.append(parametersTable(op.parameters));
  if (op.requestBody) {
    const content = op.requestBody.content["application/json"];
    card.append(el("p", {}, "Body (JSON): ", schemaLink(content.schema), op.requestBody.required ? " (required)" : ""));
  }
  card.append(responsesTable(doc, op.responses));
  return card;
}

function schemaSection(name, schema) {
  const card = el("section", { class: "card", id: `schema-${name}` }, el("h3", { class: "section-title" }, name));
  if (schema.description) card.append(prose("p", { class: "muted" }, schema.description));
  const properties = schema.properties || {};
  const required = new Set(schema.required || []);
  if (Object.keys(properties).length) {
    const rows = Object.entries(properties).map(([field, property]) =>
      el("tr", {},
        el("td", {}, el("code", {}, field), required.has(field) ? " (required)" : ""),
        el("td", {}, schemaLink(property)),
        el("td", {}, prose("span", {}, property.description), constraints(property) ? el("div", { class: "muted" }, constraints(property)) : null)));
    card.append(el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "Field"), el("th", {}, "Type"), el("th", {}, "About"))),
      el("tbody", {}, ...rows)));
  } else {
    card.append(el("p", {}, el("code", {}, typeOf(schema)), constraints(schema) ? ` — ${constraints(schema)}` : ""));
  }
  return card;
}

function render(doc) {
  const main = document.getElementById("reference");
  const toc = document.getElementById("toc");
  document.getElementById("loading").remove();
  main.append(el("p", {}, `${doc.info.title} ${doc.info.version} · OpenAPI ${doc.openapi}`));
  main.append(prose("p", {}, doc.info.description));
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([method, path, op]);
    }
  }
  const about = new Map((doc.tags || []).map((t) => [t.name, t.description]));
  // The document's tag order first (processes, instances, ...), then any other.
  const order = [...about.keys(), ...[...byTag.keys()].filter((t) => !about.has(t))];
  for (const tag of order.filter((t) => byTag.has(t))) {
    const operations = byTag.get(tag);
    toc.append(el("a", { href: `#tag-${tag}` }, tag));
    main.append(el("h2", { id: `tag-${tag}` }, tag));
    if (about.get(tag)) main.append(prose("p", { class: "muted" }, about.get(tag)));
    for (const [method, path, op] of operations) main.append(operation(doc, method, path, op));
  }
  toc.append(el("a", { href: "#schemas" }, "schemas"));
  main.append(el("h2", { id: "schemas" }, "Schemas"));
  for (const [name, schema] of Object.entries(doc.components.schemas)) main.append(schemaSection(name, schema));
  if (location.hash) {
    const target = document.getElementById(location.hash.slice(1));
    if (target) target.scrollIntoView();
  }
}

fetch("/api/v1/openapi.json")
  .then((response) => {
    if (!response.ok) throw new Error(`the document answered ${response.status}`);
    return response.json();
  })
  .then(render)
  .catch((error) => {
    document.getElementById("loading").textContent = `Could not load the OpenAPI document: ${error.message}`;
  });
