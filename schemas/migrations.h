// The numbered SQLite migrations of schemas/sql/, embedded at build time, in ascending order.
#ifndef DD2_SCHEMAS_MIGRATIONS_H_
#define DD2_SCHEMAS_MIGRATIONS_H_

#include <vector>

namespace dd2 {

struct Migration {
  int version;
  const char* sql;
};

const std::vector<Migration>& Migrations();

}  // namespace dd2

#endif  // DD2_SCHEMAS_MIGRATIONS_H_
