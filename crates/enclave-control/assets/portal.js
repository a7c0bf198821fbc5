// The portal's only script: live updates. Embedded in enclave-control, nothing loaded from
// elsewhere. Every page works without it; with it, the parts of a page marked `data-live`
// are fetched again when the server says that something changed (GET /portal/live, server-sent
// events), and replaced where they differ. The focus stays where it was.
(function () {
  "use strict";
  var main = document.querySelector("main[data-live-src]");
  if (!main || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var src = main.getAttribute("data-live-src");
  var status = document.getElementById("live-status");
  var source = null;
  var opened = false;
  var busy = false;
  var again = false;
  var stopped = false;

  function say(text) {
    if (status && status.textContent !== text) {
      status.textContent = text;
    }
    if (status) {
      status.hidden = false;
    }
  }

  // Where the focus is, as something that names the same control in the fresh part.
  function focusOf(part) {
    var active = document.activeElement;
    if (!active || !part.contains(active) || active === part) {
      return null;
    }
    return {
      id: active.id,
      label: active.getAttribute("aria-label"),
      href: active.getAttribute("href")
    };
  }

  // The element of `part` whose attribute `name` is `value`.
  function having(part, name, value) {
    var all = part.querySelectorAll("[" + name + "]");
    for (var i = 0; i < all.length; i++) {
      if (all[i].getAttribute(name) === value) {
        return all[i];
      }
    }
    return null;
  }

  function refocus(part, focus) {
    if (!focus) {
      return;
    }
    var target = focus.id ? document.getElementById(focus.id) : null;
    if (!target && focus.label) {
      target = having(part, "aria-label", focus.label);
    }
    if (!target && focus.href) {
      target = having(part, "href", focus.href);
    }
    if (target && part.contains(target)) {
      target.focus();
    }
  }

  function apply(text) {
    var fresh = new DOMParser().parseFromString(text, "text/html");
    var parts = document.querySelectorAll("[data-live]");
    for (var i = 0; i < parts.length; i++) {
      var old = parts[i];
      var now = fresh.getElementById(old.id);
      if (!now || now.innerHTML === old.innerHTML) {
        continue;
      }
      var focus = focusOf(old);
      var part = document.importNode(now, true);
      old.replaceWith(part);
      refocus(part, focus);
    }
  }

  function refresh() {
    if (stopped) {
      return;
    }
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(src, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (answer) {
        if (answer.redirected) {
          throw new Error("signedout");
        }
        if (answer.status === 404) {
          throw new Error("gone");
        }
        if (!answer.ok) {
          throw new Error("failed");
        }
        return answer.text();
      })
      .then(apply)
      .catch(function (error) {
        if (error.message === "signedout") {
          stop("Your session ended: reload the page to sign in again.");
        } else if (error.message === "gone") {
          stop("This page no longer exists (renamed or deleted?): go back to Systems.");
        } else {
          say("Could not update this page; it updates again at the next change.");
        }
      })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  function stop(text) {
    stopped = true;
    close();
    say(text);
  }

  function close() {
    if (source) {
      source.close();
      source = null;
    }
  }

  function open() {
    if (source || stopped) {
      return;
    }
    source = new EventSource("/portal/live");
    source.addEventListener("change", refresh);
    source.addEventListener("signedout", function () {
      stop("Your session ended: reload the page to sign in again.");
    });
    source.onopen = function () {
      say("Live: this page updates by itself.");
      // Changes made while the stream was down (or the page hidden) are fetched now.
      if (opened) {
        refresh();
      }
      opened = true;
    };
    source.onerror = function () {
      if (!source) {
        return;
      }
      if (source.readyState === EventSource.CLOSED) {
        stop("Live updates stopped: reload the page to see changes.");
      } else {
        say("Live updates paused: reconnecting…");
      }
    };
  }

  // A hidden tab holds no connection (browsers allow few per server).
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      close();
    } else {
      open();
    }
  });
  if (!document.hidden) {
    open();
  }
})();
