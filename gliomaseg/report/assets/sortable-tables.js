document.querySelectorAll('table.sortable th').forEach(function(th, index){
  th.addEventListener('click', function(){
    var tbody = th.closest('table').tBodies[0];
    var rows = Array.from(tbody.rows);
    var ascending = th.dataset.order !== 'asc';
    th.dataset.order = ascending ? 'asc' : 'desc';
    rows.sort(function(a, b){
      var x = a.cells[index].dataset.v, y = b.cells[index].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return ascending ? c : -c;
    });
    rows.forEach(function(r){ tbody.appendChild(r); });
  });
});
