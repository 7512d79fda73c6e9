"""Report pages a person opens from disk: one HTML page per case and an index page.

Every page is one self-contained file that works from ``file://`` with no network: CSS
and scripts are inline, pictures are base64 ``data:`` URIs, and the interactive viewer
(nilearn's :func:`nilearn.plotting.view_img`, whose HTML carries the jQuery and
brainsprite code nilearn ships in its wheel) is embedded as an ``<iframe srcdoc>``. No
page refers to anything outside itself, except the index's links to the case pages.

A case page holds the totals and the rules of the table (:mod:`lesionseg.report.lesions`),
the interactive viewer of the segmentation over the chosen channel, the sortable lesion
table, orthogonal views of the largest lesions and an axial overview
(:mod:`lesionseg.report.slices`). Each page records its own JavaScript errors in a hidden
``<pre id="page-errors">`` and sets ``data-ready="1"`` on ``<body>`` once loaded, so a
headless browser can check it (``tests/report``).
"""

from __future__ import annotations

import base64
import re
import warnings
from collections.abc import Mapping, Sequence
from html import escape
from html.parser import HTMLParser
from urllib.parse import quote

import numpy as np

from lesionseg.report.lesions import CaseTable, Lesion
from lesionseg.report.slices import (
    CHOSEN_OUTLINE,
    LESION_OUTLINE,
    lesion_point,
    lesion_views,
    overview,
    report_window,
)

#: Colour of the segmentation in the interactive viewer (one colour for every lesion, so
#: what is on screen can be checked; used nowhere else on the page).
VIEWER_COLOUR = "#00ff00"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.2em; color: #1a1a1a;
       background: #fafafa; font-size: 14px; }
h1 { font-size: 1.4em; margin: 0 0 0.2em 0; }
h2 { font-size: 1.1em; margin: 1.2em 0 0.4em 0; }
.sub, .rules, .note { color: #555; }
.rules { font-family: ui-monospace, monospace; font-size: 0.9em; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #d0d0d0; padding: 2px 8px; text-align: right; }
th { background: #eceff3; }
td.text, th.text { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
tfoot td { font-weight: 600; background: #f3f3f3; }
figure { display: inline-block; margin: 0 1em 1em 0; }
figcaption { font-size: 0.9em; color: #333; }
iframe { border: 1px solid #ccc; background: #000; }
img { display: block; }
"""

# Registered in <head>, before anything else runs, so that an error anywhere (including
# the viewer's iframe, which forwards to recordPageError) is recorded; capture phase so
# that failed images and scripts (events that do not bubble) are seen too.
_ERROR_SCRIPT = """
window.pageErrors = [];
window.recordPageError = function (message) {
  window.pageErrors.push(String(message));
  var box = document.getElementById("page-errors");
  if (box) { box.textContent = window.pageErrors.join("\\n"); }
};
window.addEventListener("error", function (event) {
  if (event instanceof ErrorEvent) {
    recordPageError(event.message + " (" + event.filename + ":" + event.lineno + ")");
  } else if (event.target && event.target !== window) {
    var t = event.target;
    recordPageError("failed to load <" + t.tagName.toLowerCase() + "> " +
                    String(t.currentSrc || t.src || t.href || "").slice(0, 80));
  }
}, true);
window.addEventListener("unhandledrejection", function (event) {
  recordPageError("unhandled rejection: " + event.reason);
});
"""

# Our own small sorter (no library): click or Enter on a header sorts its column,
# ascending then descending. Cells sort by data-value when present (full-precision
# numbers behind rounded text), numeric columns numerically with empty cells last in
# either direction, text columns in natural order (case2 before case10). Rows of <tfoot>
# (totals) stay where they are.
_SORT_SCRIPT = """
(function () {
  function key(cell, numeric) {
    var raw = cell.getAttribute("data-value");
    if (raw === null) { raw = cell.textContent.trim(); }
    if (!numeric) { return raw; }
    return raw === "" ? NaN : parseFloat(raw);
  }
  function sortBy(table, th) {
    var headers = Array.prototype.slice.call(th.parentNode.cells);
    var index = headers.indexOf(th);
    var numeric = th.getAttribute("data-type") === "number";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index], numeric), y = key(b.cells[index], numeric);
      if (numeric) {
        if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }
        return ascending ? x - y : y - x;
      }
      var order = x.localeCompare(y, undefined, {numeric: true, sensitivity: "base"});
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.tabIndex = 0;
      th.title = "sort";
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortBy(table, th);
        }
      });
    });
  });
})();
"""

_READY_SCRIPT = """
(function () {
  function ready() {
    document.getElementById("page-errors").textContent = window.pageErrors.join("\\n");
    document.body.dataset.ready = "1";
  }
  // "load" waits for the images and the viewer's iframe (which draws on its own load).
  if (document.readyState === "complete") { ready(); }
  else { window.addEventListener("load", ready); }
})();
"""

# Injected at the top of the viewer's own document: its errors go to the case page's
# record (a srcdoc iframe has its parent's origin, so the call is allowed; the console
# is the fallback).
_VIEWER_ERROR_SCRIPT = """<script>
window.addEventListener("error", function (event) {
  var message = event instanceof ErrorEvent
    ? "viewer: " + event.message + " (line " + event.lineno + ")"
    : "viewer: failed to load <" + (event.target.tagName || "?").toLowerCase() + ">";
  try { parent.recordPageError(message); } catch (e) { console.error(message); }
}, true);
</script>"""

# nilearn's page template points its favicon at raw.githubusercontent.com; nothing needs
# it (an iframe has no tab icon) and the page must not reach the network, so it goes.
_FAVICON = re.compile(r"<link\b[^>]*\brel=[\"']?(?:shortcut )?icon\b[^>]*>", re.IGNORECASE)
_BLANK_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNg"
    "YGBgAAAABQABeqhXUAAAAABJRU5ErkJggg=="
)
_EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


class _References(HTMLParser):
    """Collects the ``src``, ``href``, ``srcset``, ``poster`` and ``data`` attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data", "action") and value:
                self.found.append((tag, name, value))


def external_references(document: str) -> list[str]:
    """The attribute references of an HTML document that point outside it.

    Looks at ``src``, ``href``, ``srcset``, ``poster``, ``data`` and ``action`` values
    that are absolute (``scheme://`` or ``//``) URLs; ``data:`` URIs, fragments and
    relative file names are local. URLs in comments, licences or script text are not
    references and are not reported.

    Args:
        document: HTML text.

    Returns:
        ``"<tag attr=value>"`` per external reference (empty: self-contained).
    """
    parser = _References()
    parser.feed(document)
    parser.close()
    return [
        f"<{tag} {name}={value[:120]}>"
        for tag, name, value in parser.found
        if _EXTERNAL.match(value) and not value.lower().startswith("data:")
    ]


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _cell(value: float | int | None, digits: int) -> str:
    """A numeric ``<td>``: rounded text, full value in data-value for sorting, or empty."""
    if value is None:
        return '<td data-value=""></td>'
    text = f"{value:.{digits}f}" if digits else str(int(value))
    return f'<td data-value="{float(value)!r}">{text}</td>'


def _text_cell(value: str | None) -> str:
    return f'<td class="text">{escape(value or "")}</td>'


def _header(columns: Sequence[tuple[str, bool]]) -> str:
    """``<thead>`` of a sortable table; ``(label, numeric)`` per column."""
    cells = "".join(
        f'<th data-type="number">{escape(label)}</th>'
        if numeric
        else f'<th class="text" data-type="text">{escape(label)}</th>'
        for label, numeric in columns
    )
    return f"<thead><tr>{cells}</tr></thead>"


def _document(title: str, body: str) -> str:
    """A complete page: the shared style, error recorder, sorter and ready flag."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n"
        f"<style>{_CSS}</style>\n"
        f"<script>{_ERROR_SCRIPT}</script>\n"
        "</head>\n<body>\n"
        f"{body}\n"
        '<pre id="page-errors" hidden></pre>\n'
        f"<script>{_SORT_SCRIPT}</script>\n"
        f"<script>{_READY_SCRIPT}</script>\n"
        "</body>\n</html>\n"
    )


def _totals_html(table: CaseTable) -> str:
    totals = table.totals()
    parts = [
        '<table class="totals"><tbody>'
        f'<tr><th class="text">lesions</th><td>{totals["count"]}</td></tr>'
        f'<tr><th class="text">total volume (ml)</th><td>{totals["volume_ml"]:.3f}</td></tr>'
        "</tbody></table>"
    ]
    if "by_location" in totals:
        rows = "".join(
            f'<tr><td class="text">{escape(name)}</td><td>{item["count"]}</td>'
            f"<td>{item['volume_ml']:.3f}</td></tr>"
            for name, item in totals["by_location"].items()
        )
        parts.append(
            "<h2>By location</h2>"
            '<table class="locations"><thead><tr><th class="text">location</th>'
            "<th>lesions</th><th>volume (ml)</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    return "\n".join(parts)


_LESION_COLUMNS = (
    ("id", True),
    ("volume mm³", True),
    ("voxels", True),
    ("centroid x mm", True),
    ("centroid y mm", True),
    ("centroid z mm", True),
    ("location", False),
    ("mean probability", True),
    ("max probability", True),
    ("mean uncertainty", True),
    ("disagreement", True),
)


def _lesion_row(lesion: Lesion, pictured: bool) -> str:
    # The id links to the lesion's views when the page has them.
    ident = f'<a href="#lesion-{lesion.id}">{lesion.id}</a>' if pictured else str(lesion.id)
    x, y, z = lesion.centroid_mm
    return (
        f'<tr><td data-value="{lesion.id}">{ident}</td>'
        + _cell(lesion.volume_mm3, 1)
        + _cell(lesion.voxels, 0)
        + _cell(x, 1)
        + _cell(y, 1)
        + _cell(z, 1)
        + _text_cell(lesion.location)
        + _cell(lesion.mean_probability, 3)
        + _cell(lesion.max_probability, 3)
        + _cell(lesion.mean_uncertainty, 3)
        + _cell(lesion.disagreement, 3)
        + "</tr>"
    )


def _viewer(
    stat: np.ndarray,
    image: np.ndarray,
    affine: np.ndarray,
    cut_mm: Sequence[float],
    *,
    cmap,
    threshold: float,
    colorbar: bool,
    title: str,
) -> str:
    """Nilearn's slice viewer of ``stat`` over ``image`` as an ``<iframe srcdoc>``.

    Returns an explanatory paragraph instead when nilearn's page would refer to
    anything outside itself (a future nilearn version), so the page never does.
    """
    import nibabel as nib
    from nilearn.plotting import view_img

    affine = np.asarray(affine, float)
    with warnings.catch_warnings():
        # nilearn warns about resampling and casting it does on purpose here.
        warnings.simplefilter("ignore")
        view = view_img(
            nib.Nifti1Image(np.asarray(stat, np.float32), affine),
            bg_img=nib.Nifti1Image(np.asarray(image, np.float32), affine),
            cut_coords=[float(c) for c in cut_mm],
            colorbar=colorbar,
            title=None,
            threshold=threshold,
            cmap=cmap,
            symmetric_cmap=False,
            vmin=0.0,
            vmax=1.0,
            # Fixed, not "auto": the background is black whatever the image looks like,
            # and not dimmed, so the grey values match the static views.
            black_bg=True,
            dim=0,
            resampling_interpolation="nearest",
            opacity=1.0,
            radiological=False,
        )
    document = _FAVICON.sub("", view.get_standalone())
    # Without a colour bar nilearn still writes the colour-map <img> with an empty data
    # URI, which the browser reports as a failed load; a 1-pixel transparent PNG is what
    # it stands for (the viewer does not read it then).
    document = document.replace('src="data:image/png;base64,"', f'src="{_BLANK_PNG}"')
    document = re.sub(r"<head>", "<head>" + _VIEWER_ERROR_SCRIPT, document, count=1)
    leaks = external_references(document)
    if leaks:
        return (
            '<p class="note">Interactive viewer left out: nilearn\'s viewer refers to '
            f"{escape(', '.join(leaks))}, and this page must open without a network.</p>"
        )
    # nilearn's height already allows for annotations and the opacity slider; the
    # extra pixels are the iframe body's margins.
    width, height = int(view.width) + 20, int(view.height) + 10
    return (
        f'<iframe title="{escape(title)}" width="{width}" height="{height}" '
        f'srcdoc="{escape(document, quote=True)}"></iframe>'
    )


def case_page(
    table: CaseTable,
    image: np.ndarray,
    numbered: np.ndarray,
    affine: np.ndarray,
    *,
    channel: str,
    probabilities: np.ndarray | None = None,
    largest: int = 5,
    viewer: bool = True,
) -> str:
    """The report page of one case, as one self-contained HTML document.

    Args:
        table: The case's lesion table (:func:`lesionseg.report.lesions.lesion_table`).
        image: The channel to show (3D, canonical RAS, the grid of ``numbered``).
        numbered: The numbered lesion map the table describes.
        affine: Voxel-to-world matrix of that grid.
        channel: Name of the channel shown (in the title).
        probabilities: Lesion probability map on the same grid, or None; when given
            (and ``viewer``), a second viewer shows it with a colour bar.
        largest: Number of lesions, largest first, that get orthogonal views.
        viewer: Embed the interactive viewer (nilearn); off for small, fast pages.

    Returns:
        The HTML text.

    Raises:
        ValueError: ``image`` and ``numbered`` differ in shape.
    """
    image = np.asarray(image)
    numbered = np.asarray(numbered)
    if image.shape != numbered.shape:
        raise ValueError(f"image {image.shape} and lesions {numbered.shape} differ in shape")
    affine = np.asarray(affine, float)
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    window = report_window(image)
    pictured = [les.id for les in table.lesions[: max(int(largest), 0)]]
    case, shown = escape(table.case), escape(channel)

    sections = [
        f"<h1>Case {case}</h1>",
        f'<p class="sub">lesion segmentation shown on <b>{shown}</b></p>',
        f'<p class="rules">{escape(table.rules())}</p>',
        "<h2>Totals</h2>",
        _totals_html(table),
    ]
    if viewer:
        from matplotlib.colors import ListedColormap

        if pictured:
            first = lesion_point(numbered, pictured[0])
            cut = (affine @ np.append(first, 1.0))[:3]
        else:
            cut = (affine @ np.append((np.array(image.shape) - 1) / 2, 1.0))[:3]
        # The viewer scales its background from the data's own min and max: hand it the
        # report window already applied (0–1), so its contrast matches the static views,
        # and keep exact zeros (outside the head) at 0, which nilearn draws black.
        low, high = window
        grey = np.where(image != 0, np.clip((image - low) / (high - low), 1e-3, 1.0), 0.0)
        sections += [
            "<h2>Viewer</h2>",
            f'<p class="note">Segmentation in green over {shown}; click to move the '
            "cross, the slider sets the overlay's opacity.</p>",
            _viewer(
                numbered > 0,
                grey,
                affine,
                cut,
                # 256 entries of one colour: nilearn rebuilds the map around the
                # threshold from cmap.N samples, which fails for a 1-entry map.
                cmap=ListedColormap([VIEWER_COLOUR] * 256, name="lesion"),
                threshold=0.5,
                colorbar=False,
                title=f"viewer: segmentation over {channel}",
            ),
        ]
        if probabilities is not None:
            sections += [
                "<h2>Lesion probability</h2>",
                _viewer(
                    np.clip(np.asarray(probabilities, np.float32), 0.0, 1.0),
                    grey,
                    affine,
                    cut,
                    cmap="hot",
                    threshold=0.05,
                    colorbar=True,
                    title=f"viewer: lesion probability over {channel}",
                ),
            ]

    rows = "\n".join(_lesion_row(les, les.id in pictured) for les in table.lesions)
    sections += [
        "<h2>Lesions</h2>",
        '<p class="note">Click a column header to sort.</p>',
        f'<table class="sortable lesions">{_header(_LESION_COLUMNS)}'
        f"<tbody>\n{rows}\n</tbody></table>",
    ]
    if pictured:
        figures = []
        for les in table.lesions[: len(pictured)]:
            png = lesion_views(image, numbered, les.id, spacing, window=window)
            figures.append(
                f'<figure id="lesion-{les.id}"><img src="{_data_uri(png)}" width="600" '
                f'height="220" alt="lesion {les.id}: axial, coronal and sagittal slices">'
                f"<figcaption>lesion {les.id}: {les.volume_mm3:.1f} mm³"
                f"{', ' + escape(les.location) if les.location else ''}</figcaption></figure>"
            )
        sections += [
            f"<h2>Largest lesions ({len(pictured)} of {len(table.lesions)})</h2>",
            f'<p class="note">Yellow ({CHOSEN_OUTLINE}): this lesion; red ({LESION_OUTLINE}):'
            " other lesions. Neurological orientation (subject's right on the right).</p>",
            "\n".join(figures),
        ]
    sections += [
        "<h2>Overview</h2>",
        f'<img src="{_data_uri(overview(image, numbered, spacing, window=window))}" '
        'alt="axial slices with lesion outlines">',
    ]
    if table.files:
        items = "".join(
            f"<li>{escape(role)}: <code>{escape(path)}</code></li>"
            for role, path in table.files.items()
        )
        sections += ["<h2>Files</h2>", f"<ul>{items}</ul>"]
    return _document(f"{table.case} — {channel} — lesion report", "\n".join(sections))


def index_page(tables: Sequence[CaseTable], pages: Mapping[str, str]) -> str:
    """The data set's summary page: one sortable row per case, linking to its page.

    Args:
        tables: The cases' lesion tables.
        pages: Case id → file name of its page, relative to the index page (a case
            without an entry is listed without a link).

    Returns:
        The HTML text.
    """
    from lesionseg.report.locations import LOCATION_CLASSES

    located = any(t.locations is not None for t in tables)
    columns = [("case", False), ("lesions", True), ("total volume ml", True)]
    if located:
        columns += [(name, True) for name in LOCATION_CLASSES]
    rows = []
    for t in tables:
        totals = t.totals()
        name = escape(t.case)
        if t.case in pages:
            # Percent-encode the file name (spaces, '#', '?' would break the link), then
            # HTML-escape the attribute.
            href = escape(quote(pages[t.case], safe="/"), quote=True)
            name = f'<a href="{href}">{name}</a>'
        cells = [f'<td class="text" data-value="{escape(t.case, quote=True)}">{name}</td>']
        cells += [_cell(totals["count"], 0), _cell(totals["volume_ml"], 3)]
        if located:
            by = totals.get("by_location")
            cells += [_cell(by[n]["count"] if by else None, 0) for n in LOCATION_CLASSES]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    count = sum(len(t.lesions) for t in tables)
    volume = sum(les.volume_mm3 for t in tables for les in t.lesions) / 1000.0
    foot = [
        f'<td class="text">all {len(tables)} cases</td>',
        f"<td>{count}</td>",
        f"<td>{volume:.3f}</td>",
    ]
    if located:
        for n in LOCATION_CLASSES:
            foot.append(f"<td>{sum(les.location == n for t in tables for les in t.lesions)}</td>")
    rules = sorted({t.rules() for t in tables})
    body = "\n".join(
        [
            "<h1>Lesion report</h1>",
            f'<p class="sub">{len(tables)} cases, {count} lesions, {volume:.3f} ml in all'
            f"{f', {count / len(tables):.1f} lesions per case' if tables else ''}</p>",
            "".join(f'<p class="rules">{escape(r)}</p>' for r in rules),
            '<p class="note">Click a column header to sort; a case id opens its page.</p>',
            f'<table class="sortable cases">{_header(columns)}'
            f"<tbody>\n{chr(10).join(rows)}\n</tbody>"
            f"<tfoot><tr>{''.join(foot)}</tr></tfoot></table>",
        ]
    )
    return _document("Lesion report — index", body)
