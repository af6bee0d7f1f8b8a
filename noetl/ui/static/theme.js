// Applies the saved colour scheme before the page paints (light, dark or the system's).
(function () {
  var saved = null;
  try { saved = localStorage.getItem("noetl.theme"); } catch (e) { saved = null; }
  if (saved === "light" || saved === "dark") document.documentElement.dataset.theme = saved;
})();
