// report.html's component explorer: filters, sorts, pages and draws the components
// that clusterclean.explorer put in the page's JSON. Text goes in with textContent only.
(function () {
  "use strict";
  var source = document.getElementById("cc-data");
  if (!source) return;
  var data = JSON.parse(source.textContent);
  var PAGE = data.pageSize;
  var byId = {};
  data.components.forEach(function (c) { byId[c.id] = c; });
  var state = { sort: data.sort, page: 0, attribute: -1, flags: {}, minSize: 2, text: "", only: null };
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function order(key) {
    for (var i = 0; i < data.sorts.length; i++) {
      if (data.sorts[i].key === key) return data.sorts[i].order;
    }
    return data.sorts[0].order;
  }

  function idMatches(c, text) {
    var ids = c.images.map(function (m) { return m.id; }).concat(c.otherIds);
    return ids.some(function (id) { return id.toLowerCase().indexOf(text) >= 0; });
  }

  function matches(c) {
    if (state.only !== null) return c.id === state.only;
    if (c.size < state.minSize) return false;
    if (state.attribute >= 0 && c.disagree.indexOf(state.attribute) < 0) return false;
    for (var flag in state.flags) {
      if (state.flags[flag] && c.flags.indexOf(flag) < 0) return false;
    }
    return !state.text || idMatches(c, state.text);
  }

  function chip(text, cls, title) {
    var node = el("span", "chip" + (cls ? " " + cls : ""), text);
    if (title) node.title = title;
    return node;
  }

  function issueText(issue) {
    return data.issueFields.map(function (name) {
      var value = issue[name];
      if (name === "attribute") value = data.attributes[value];
      return name + ": " + (value === null ? "–" : value);
    }).join(", ");
  }

  function figure(c, m) {
    var fig = el("figure");
    fig.setAttribute("data-image-id", m.id);
    if (m.thumb && m.thumb.indexOf("data:") === 0) {
      var img = el("img", "thumb");
      img.src = m.thumb;
      img.alt = m.id;
      fig.appendChild(img);
    } else if (data.hasPaths) {
      var why = m.thumb ? m.thumb.slice(1)
        : m.href ? "no thumbnail past the first " + data.nThumbnails + " components" : "no image file";
      var box = el("div", "placeholder", m.id);
      box.appendChild(el("br"));
      box.appendChild(document.createTextNode("(" + why + ")"));
      fig.appendChild(box);
    }
    var caption = el("figcaption");
    var name = el(m.href ? "a" : "div", "id", m.id);
    if (m.href) name.href = m.href;
    caption.appendChild(name);
    var sim = m.sim === null ? "–" : m.sim.toFixed(3);
    caption.appendChild(document.createTextNode("centroid sim " + sim + (m.where ? " · " + m.where : "")));
    caption.appendChild(el("br"));
    var rare = {};
    var issues = {};
    m.rare.forEach(function (a) { rare[a] = true; });
    m.issues.forEach(function (issue) { issues[issue.attribute] = issueText(issue); });
    var disagree = {};
    c.disagree.forEach(function (a) { disagree[a] = true; });
    m.pos.forEach(function (a) {
      caption.appendChild(chip(data.attributes[a], rare[a] ? "issue" : disagree[a] ? "disagree" : "", issues[a]));
    });
    m.rare.forEach(function (a) {
      if (m.pos.indexOf(a) < 0) caption.appendChild(chip(data.attributes[a], "issue absent", issues[a]));
    });
    fig.appendChild(caption);
    return fig;
  }

  function card(c) {
    var section = el("section", "component");
    section.id = "c" + c.id;
    section.setAttribute("data-component-id", String(c.id));
    var title = el("h3");
    var anchor = el("a", "anchor", "#" + c.id);
    anchor.href = "#c" + c.id;
    title.appendChild(anchor);
    title.appendChild(document.createTextNode(" Component " + c.id + " · " + c.size + " images"));
    section.appendChild(title);
    section.appendChild(el("p", "metrics", c.facts.map(function (f) { return f[0] + " " + f[1]; }).join(", ")));
    if (data.labelled) {
      var counts = el("div", "counts", "label counts (positive/known): ");
      if (!c.counts.length) counts.appendChild(document.createTextNode("none"));
      c.counts.forEach(function (row) {
        counts.appendChild(chip(data.attributes[row[0]] + " " + row[1] + "/" + row[2], row[3] ? "disagree" : ""));
      });
      section.appendChild(counts);
    }
    var images = el("div", "images");
    var members = c.images.slice();
    if (state.text) {
      members.sort(function (a, b) {
        return (b.id.toLowerCase().indexOf(state.text) >= 0) - (a.id.toLowerCase().indexOf(state.text) >= 0);
      });
    }
    members.forEach(function (m) { images.appendChild(figure(c, m)); });
    section.appendChild(images);
    if (c.otherIds.length) {
      section.appendChild(el("p", "metrics", "… and " + c.otherIds.length + " more images."));
    }
    return section;
  }

  function render() {
    var shown = order(state.sort).map(function (i) { return data.components[i]; }).filter(matches);
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var list = $("cc-list");
    list.textContent = "";
    shown.slice(state.page * PAGE, (state.page + 1) * PAGE).forEach(function (c) { list.appendChild(card(c)); });
    $("cc-count").textContent = shown.length + " of " + data.components.length + " components";
    $("cc-page").textContent = "page " + (state.page + 1) + " of " + pages;
    $("cc-prev").disabled = state.page === 0;
    $("cc-next").disabled = state.page >= pages - 1;
    $("cc-only").hidden = state.only === null;
    if (!shown.length) list.appendChild(el("p", "empty", "No component matches these filters."));
  }

  function update(change) {
    change();
    state.page = 0;
    render();
  }

  $("cc-sort").addEventListener("change", function (e) { update(function () { state.sort = e.target.value; }); });
  var attribute = $("cc-attribute");
  if (attribute) {
    attribute.addEventListener("change", function (e) { update(function () { state.attribute = +e.target.value; }); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("input[data-flag]"), function (box) {
    box.addEventListener("change", function () {
      update(function () { state.flags[box.getAttribute("data-flag")] = box.checked; });
    });
  });
  ["input", "change"].forEach(function (type) {
    $("cc-min-size").addEventListener(type, function (e) {
      update(function () { state.minSize = +e.target.value || 2; });
    });
    $("cc-text").addEventListener(type, function (e) {
      update(function () { state.text = e.target.value.trim().toLowerCase(); });
    });
  });
  $("cc-prev").addEventListener("click", function () { state.page -= 1; render(); });
  $("cc-next").addEventListener("click", function () { state.page += 1; render(); });
  Array.prototype.forEach.call(document.querySelectorAll("button[data-attribute]"), function (button) {
    button.addEventListener("click", function () {
      var index = +button.getAttribute("data-attribute");
      if (attribute) attribute.value = String(index);
      update(function () { state.attribute = index; });
      $("explorer").scrollIntoView();
    });
  });
  $("cc-only").addEventListener("click", function () { location.hash = "#explorer"; });

  function fromHash() {
    var match = /^#c(\d+)$/.exec(location.hash);
    state.only = match && byId[+match[1]] ? +match[1] : null;
    state.page = 0;
    render();
    if (state.only !== null) $("c" + state.only).scrollIntoView();
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
}());
