// The web shell: a tiny client-side router. Later issues add sign-in and the
// full app; this page shows the appliance is up and where to go next.
const app = document.getElementById('app');
const status = document.getElementById('status');

const routes = {
  '/': () => `<div class="card"><h2>Welcome to docket</h2>
    <p>Your firm's encrypted local copy of its Clio data.</p>
    <p>Integrators: the REST API is described at <a href="/api/docs">/api/docs</a>.</p></div>`,
};

function render() {
  const view = routes[location.pathname];
  app.innerHTML = view ? view() : `<div class="card"><h2>Not found</h2><p>No page at ${escapeHtml(location.pathname)}.</p></div>`;
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

async function health() {
  try {
    const r = await fetch('/readyz');
    status.textContent = r.ok ? 'Appliance ready.' : 'Appliance not ready.';
  } catch {
    status.textContent = 'Appliance unreachable.';
  }
}

render();
health();
